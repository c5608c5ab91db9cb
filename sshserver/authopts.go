package sshserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AuthorizedKey is a client key together with the restrictions its
// authorized_keys line puts on it. LoadAuthorizedKeys returns its keys as
// *AuthorizedKey, and Server enforces the restrictions of every
// *AuthorizedKey in Server.AuthorizedKeys; a plain ssh.PublicKey there is
// unrestricted. When a key appears on several lines, a client is let in if
// any one of those lines permits it, as with sshd.
type AuthorizedKey struct {
	ssh.PublicKey
	// Source names the line the key came from ("file:line"), for logs.
	Source string

	from   []addrPattern // nil: any address
	expiry time.Time     // zero: no expiry
}

// Permits reports why a client at remote may not use k at time now, or nil
// if it may.
func (k *AuthorizedKey) Permits(remote net.Addr, now time.Time) error {
	if !k.expiry.IsZero() && now.After(k.expiry) {
		return fmt.Errorf("key expired at %s", k.expiry.Format(time.RFC3339))
	}
	if k.from != nil {
		ip, ok := remoteIP(remote)
		if !ok {
			return fmt.Errorf("client address %s is not an IP address; the key is restricted by from=", remote)
		}
		if !matchAddrPatterns(k.from, ip) {
			return fmt.Errorf("client address %s is not permitted by the key's from= option", ip)
		}
	}
	return nil
}

// remoteIP is the client's address as sshd would log it: IPv4-mapped IPv6
// addresses become plain IPv4, and zones are dropped.
func remoteIP(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.Addr{}, false
		}
	}
	ip := ap.Addr().Unmap().WithZone("")
	return ip, ip.IsValid()
}

// Options that only take away rights this server never grants: accepting
// them changes nothing.
var harmlessOptions = map[string]bool{
	"restrict":            true,
	"no-pty":              true,
	"no-port-forwarding":  true,
	"no-agent-forwarding": true,
	"no-x11-forwarding":   true,
	"no-user-rc":          true,
}

// refusedOptions would grant or change something the server cannot
// honour; silently ignoring them would run the client with rights or
// behaviour other than the file says.
var refusedOptions = map[string]string{
	"command":           "a forced command cannot be honoured; this server only runs its own nix-daemon --stdio",
	"cert-authority":    "certificate authentication is not supported",
	"principals":        "certificate authentication is not supported",
	"environment":       "environment variables cannot be set; no program is run",
	"permitopen":        "port forwarding is not supported",
	"permitlisten":      "port forwarding is not supported",
	"tunnel":            "tunnel devices are not supported",
	"pty":               "ptys are not supported",
	"user-rc":           "no rc file is ever run",
	"port-forwarding":   "port forwarding is not supported",
	"agent-forwarding":  "agent forwarding is not supported",
	"x11-forwarding":    "X11 forwarding is not supported",
	"no-touch-required": "security key flags are not checked",
	"verify-required":   "security key flags are not checked",
}

// applyOptions interprets the options of one authorized_keys line, as
// returned by ssh.ParseAuthorizedKey, into k. expiry-time= is read in loc
// unless it ends in Z.
func applyOptions(k *AuthorizedKey, opts []string, loc *time.Location) error {
	var haveFrom, haveExpiry bool
	for _, o := range opts {
		name, value, hasValue, err := splitOption(o)
		if err != nil {
			return err
		}
		switch {
		case harmlessOptions[name]:
			if hasValue {
				return fmt.Errorf("option %s takes no value", name)
			}
		case name == "from":
			if !hasValue {
				return errors.New(`option from needs a value: from="pattern-list"`)
			}
			if haveFrom {
				return errors.New("option from given twice")
			}
			haveFrom = true
			p, err := parseAddrPatterns(value)
			if err != nil {
				return fmt.Errorf("option from: %w", err)
			}
			k.from = p
		case name == "expiry-time":
			if !hasValue {
				return errors.New(`option expiry-time needs a value: expiry-time="YYYYMMDD[HHMM[SS]]"`)
			}
			if haveExpiry {
				return errors.New("option expiry-time given twice")
			}
			haveExpiry = true
			t, err := parseExpiry(value, loc)
			if err != nil {
				return fmt.Errorf("option expiry-time: %w", err)
			}
			k.expiry = t
		default:
			if why, ok := refusedOptions[name]; ok {
				return fmt.Errorf("option %s is not supported: %s", name, why)
			}
			return fmt.Errorf("unknown option %q", clip(name))
		}
	}
	return nil
}

// splitOption splits name or name="value", undoing the only escape sshd
// knows inside quotes, \". Names are case-insensitive, as in sshd.
func splitOption(o string) (name, value string, hasValue bool, err error) {
	name, quoted, hasValue := strings.Cut(o, "=")
	name = strings.ToLower(name)
	if name == "" {
		return "", "", false, fmt.Errorf("empty option name in %q", clip(o))
	}
	if !hasValue {
		return name, "", false, nil
	}
	if len(quoted) < 2 || quoted[0] != '"' {
		return "", "", false, fmt.Errorf("option %s: value must be in double quotes", clip(name))
	}
	var b strings.Builder
	for i := 1; i < len(quoted); i++ {
		c := quoted[i]
		if c == '\\' && i+1 < len(quoted) && quoted[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		if c == '"' {
			if i != len(quoted)-1 {
				return "", "", false, fmt.Errorf("option %s: text after the closing quote", clip(name))
			}
			return name, b.String(), true, nil
		}
		b.WriteByte(c)
	}
	return "", "", false, fmt.Errorf("option %s: missing closing quote", clip(name))
}

// parseExpiry reads sshd's expiry-time format. Without a trailing Z the
// time is local, as sshd(8) documents; which zone is "local" is decided by
// loc, the server's zone when the file is loaded.
func parseExpiry(s string, loc *time.Location) (time.Time, error) {
	digits := s
	if strings.HasSuffix(digits, "Z") || strings.HasSuffix(digits, "z") {
		digits = digits[:len(digits)-1]
		loc = time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(digits)]
	if !ok || strings.Trim(digits, "0123456789") != "" {
		return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", clip(s))
	}
	t, err := time.ParseInLocation(layout, digits, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: %w", clip(s), err)
	}
	return t, nil
}

// addrPattern is one entry of a from= list.
type addrPattern struct {
	negate bool
	prefix netip.Prefix // valid for an address or CIDR entry
	glob   string       // otherwise a * and ? pattern over the address text
}

// Characters that can appear in an address pattern. Anything else can only
// match a host name, and host names would need reverse DNS, which the
// server does not do (sshd's default, UseDNS no, has the same effect).
const addrPatternChars = "0123456789abcdefABCDEF.:*?/"

// maxAddrPatterns bounds the work done per authentication attempt.
const maxAddrPatterns = 256

// parseAddrPatterns reads sshd's from= pattern list: comma-separated
// entries, each an address, a CIDR network a.b.c.d/nn, or a pattern with *
// and ? wildcards, optionally negated with a leading !.
func parseAddrPatterns(list string) ([]addrPattern, error) {
	entries := strings.Split(list, ",")
	if len(entries) > maxAddrPatterns {
		return nil, fmt.Errorf("more than %d patterns", maxAddrPatterns)
	}
	out := make([]addrPattern, 0, len(entries))
	for _, e := range entries {
		var p addrPattern
		if rest, ok := strings.CutPrefix(e, "!"); ok {
			p.negate, e = true, rest
		}
		if e == "" {
			return nil, fmt.Errorf("empty pattern in %q", clip(list))
		}
		if strings.Trim(e, addrPatternChars) != "" {
			return nil, fmt.Errorf("%q is a host name pattern; only client addresses are matched (no reverse DNS)", clip(e))
		}
		switch {
		case strings.Contains(e, "/"):
			pre, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR network: %w", clip(e), err)
			}
			if pre.Addr().Is4In6() {
				pre, err = pre.Addr().Unmap().Prefix(pre.Bits() - 96)
				if err != nil {
					return nil, fmt.Errorf("%q is not a CIDR network: %w", clip(e), err)
				}
			}
			if pre.Masked() != pre {
				return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", clip(e), pre.Masked())
			}
			p.prefix = pre
		case strings.ContainsAny(e, "*?"):
			p.glob = strings.ToLower(e)
		default:
			a, err := netip.ParseAddr(e)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address: %w", clip(e), err)
			}
			a = a.Unmap()
			p.prefix = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

// matchAddrPatterns applies sshd's rule: a matching negated entry refuses
// outright, otherwise any matching entry permits.
func matchAddrPatterns(ps []addrPattern, ip netip.Addr) bool {
	var text string // formatted only if a wildcard entry needs it
	matched := false
	for _, p := range ps {
		var m bool
		if p.prefix.IsValid() {
			m = p.prefix.Contains(ip)
		} else {
			if text == "" {
				text = ip.String()
			}
			m = matchGlob(p.glob, text)
		}
		if m {
			if p.negate {
				return false
			}
			matched = true
		}
	}
	return matched
}

// matchGlob matches s against a pattern where * is any run of bytes and ?
// any one byte. Backtracking only to the last *, so it runs in
// O(len(pattern)*len(s)).
func matchGlob(pattern, s string) bool {
	var p, i, star, mark = 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
