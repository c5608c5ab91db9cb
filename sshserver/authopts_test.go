package sshserver

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func tcpAddr(s string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

// parseLine parses one authorized_keys line with the given options prefix.
func parseLine(t *testing.T, opts string, loc *time.Location) (*AuthorizedKey, error) {
	t.Helper()
	key := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey())), "\n")
	line := key
	if opts != "" {
		line = opts + " " + key
	}
	keys, err := parseAuthorizedKeys(strings.NewReader(line+"\n"), "authorized_keys", loc)
	if err != nil {
		return nil, err
	}
	return keys[0].(*AuthorizedKey), nil
}

func TestAuthorizedKeyOptionsRefused(t *testing.T) {
	tests := []struct {
		opts, wantErr string
	}{
		{`command="nix-daemon --stdio"`, "authorized_keys:1: option command is not supported"},
		{`COMMAND="x"`, "option command is not supported"},
		{`cert-authority`, "option cert-authority is not supported"},
		{`principals="alice"`, "option principals is not supported"},
		{`environment="NIX_REMOTE=daemon"`, "option environment is not supported"},
		{`permitopen="localhost:80"`, "option permitopen is not supported"},
		{`permitlisten="8080"`, "option permitlisten is not supported"},
		{`tunnel="0"`, "option tunnel is not supported"},
		{`restrict,pty`, "option pty is not supported"},
		{`no-touch-required`, "option no-touch-required is not supported"},
		{`verify-required`, "option verify-required is not supported"},
		{`frobnicate`, `unknown option "frobnicate"`},
		{`no-pty="yes"`, "option no-pty takes no value"},
		{`from`, "option from needs a value"},
		{`from=10.0.0.1`, "value must be in double quotes"},
		{`from="10.0.0.1"x`, "text after the closing quote"},
		{`from="10.0.0.1",from="10.0.0.2"`, "option from given twice"},
		{`from=""`, "empty pattern"},
		{`from="10.0.0.1,"`, "empty pattern"},
		{`from="!"`, "empty pattern"},
		{`from="*.example.com"`, "host name pattern"},
		{`from="!build-host"`, "host name pattern"},
		{`from="10.0.0.0/33"`, "not a CIDR network"},
		{`from="10.0.0.*/8"`, "not a CIDR network"},
		{`from="10.0.0.1/8"`, "host bits set (did you mean 10.0.0.0/8?)"},
		{`from="10.0.0.256"`, "not an address"},
		{`from="` + strings.Repeat("1.2.3.4,", maxAddrPatterns) + `1.2.3.4"`, "more than 256 patterns"},
		{`expiry-time`, "option expiry-time needs a value"},
		{`expiry-time="2030"`, "is not YYYYMMDD[HHMM[SS]][Z]"},
		{`expiry-time="2030010112"`, "is not YYYYMMDD[HHMM[SS]][Z]"},
		{`expiry-time="2030-01-01"`, "is not YYYYMMDD[HHMM[SS]][Z]"},
		{`expiry-time="20301301"`, "month out of range"},
		{`expiry-time="20300230"`, "day out of range"},
		{`expiry-time="203001012460"`, "out of range"},
		{`expiry-time="20300101",expiry-time="20310101"`, "option expiry-time given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.opts, func(t *testing.T) {
			_, err := parseLine(t, tt.opts, time.UTC)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAuthorizedKeyPermits(t *testing.T) {
	berlin := time.FixedZone("UTC+2", 2*3600)
	now := time.Date(2030, 6, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		opts   string
		remote string
		when   time.Time
		want   string // error substring; empty means permitted
	}{
		{"", "192.0.2.1:5000", now, ""},
		{"restrict,no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc", "192.0.2.1:5000", now, ""},
		{`from="192.0.2.1"`, "192.0.2.1:5000", now, ""},
		{`from="192.0.2.1"`, "192.0.2.2:5000", now, "192.0.2.2 is not permitted"},
		{`from="192.0.2.0/24"`, "192.0.2.77:1", now, ""},
		{`from="192.0.2.0/24"`, "192.0.3.1:1", now, "not permitted"},
		{`from="192.0.2.*"`, "192.0.2.200:1", now, ""},
		{`from="192.0.2.?"`, "192.0.2.7:1", now, ""},
		{`from="192.0.2.?"`, "192.0.2.70:1", now, "not permitted"},
		{`from="*"`, "[2001:db8::1]:1", now, ""},
		{`from="*,!192.0.2.1"`, "192.0.2.1:1", now, "not permitted"},
		{`from="!192.0.2.1,*"`, "192.0.2.1:1", now, "not permitted"},
		{`from="*,!192.0.2.1"`, "192.0.2.2:1", now, ""},
		{`from="10.0.0.0/8,!10.1.0.0/16"`, "10.1.2.3:1", now, "not permitted"},
		{`from="10.0.0.0/8,!10.1.0.0/16"`, "10.2.2.3:1", now, ""},
		{`from="!10.0.0.1"`, "10.0.0.2:1", now, "not permitted"}, // negation alone permits nothing
		{`from="2001:db8::/32"`, "[2001:db8:1::5]:1", now, ""},
		{`from="2001:DB8::*"`, "[2001:db8::5]:1", now, ""},
		{`from="2001:db8::0001"`, "[2001:db8::1]:1", now, ""},
		{`from="2001:db8::/32"`, "[2001:db9::1]:1", now, "not permitted"},
		// An IPv4 client on a dual-stack socket is matched as IPv4.
		{`from="192.0.2.0/24"`, "[::ffff:192.0.2.9]:1", now, ""},
		{`from="::ffff:192.0.2.9"`, "192.0.2.9:1", now, ""},
		{`from="::ffff:192.0.2.0/120"`, "192.0.2.9:1", now, ""},
		{`from="192.0.2.0/24"`, "[2001:db8::1]:1", now, "not permitted"},
		{`expiry-time="20300615"`, "192.0.2.1:1", now, "key expired at 2030-06-15T00:00:00Z"},
		{`expiry-time="20300616"`, "192.0.2.1:1", now, ""},
		{`expiry-time="203006151200"`, "192.0.2.1:1", now, ""}, // valid up to and including the instant
		{`expiry-time="20300615115959"`, "192.0.2.1:1", now, "expired"},
		{`expiry-time="20300615120001Z"`, "192.0.2.1:1", now, ""},
		{`expiry-time="20300615115959z"`, "192.0.2.1:1", now, "expired"},
		{`expiry-time="20300615130000",from="192.0.2.1"`, "192.0.2.1:1", now, ""},
		{`from="192.0.2.1",expiry-time="20300101"`, "192.0.2.1:1", now, "expired"},
		{`from="192.0.2.1"`, "", now, "not an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.opts+"@"+tt.remote, func(t *testing.T) {
			k, err := parseLine(t, tt.opts, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			var remote net.Addr = &net.UnixAddr{Name: "@sock", Net: "unix"}
			if tt.remote != "" {
				remote = tcpAddr(tt.remote)
			}
			err = k.Permits(remote, tt.when)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}

	// Without Z the time is read in the zone given at load time.
	k, err := parseLine(t, `expiry-time="203006151300"`, berlin)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Permits(tcpAddr("192.0.2.1:1"), now); err == nil {
		t.Fatal("13:00 at UTC+2 is 11:00 UTC, before now; key should have expired")
	}
	if err := k.Permits(tcpAddr("192.0.2.1:1"), now.Add(-time.Hour-time.Second)); err != nil {
		t.Fatalf("before the local expiry: %v", err)
	}
}

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"*", "", true},
		{"*", "anything", true},
		{"?", "", false},
		{"a?c", "abc", true},
		{"a*c", "abbbbc", true},
		{"a*c", "abbbbd", false},
		{"*.1", "10.0.0.1", true},
		{"*.1", "10.0.0.11", false},
		{"1*1*1", "1.1.1", true},
		{"1*1*1", "1.1.", false},
		{"**", "x", true},
		{strings.Repeat("*a", 20) + "b", strings.Repeat("a", 45), false},
	}
	for _, tt := range tests {
		if got := matchGlob(tt.pattern, tt.s); got != tt.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func FuzzParseAddrPatterns(f *testing.F) {
	f.Add("10.0.0.0/8,!10.1.2.*", "10.1.2.3")
	f.Add("2001:db8::/32,::ffff:192.0.2.0/120", "192.0.2.1")
	f.Add("*", "::1")
	f.Fuzz(func(t *testing.T, list, client string) {
		ps, err := parseAddrPatterns(list)
		if err != nil {
			if ps != nil {
				t.Fatalf("error %v with %d patterns", err, len(ps))
			}
			return
		}
		ip, err := netip.ParseAddr(client)
		if err != nil {
			return
		}
		ip = ip.Unmap().WithZone("")
		got := matchAddrPatterns(ps, ip)
		// Excluding the client explicitly always wins.
		if matchAddrPatterns(append(ps, addrPattern{negate: true, prefix: netip.PrefixFrom(ip, ip.BitLen())}), ip) {
			t.Fatalf("%q matched %s despite !%s", list, ip, ip)
		}
		// Admitting the client explicitly changes nothing if a negated
		// entry already excluded it.
		admitted := matchAddrPatterns(append(ps, addrPattern{prefix: netip.PrefixFrom(ip, ip.BitLen())}), ip)
		if got && !admitted {
			t.Fatalf("%q: adding %s un-matched it", list, ip)
		}
	})
}

// BenchmarkPermits measures the per-attempt cost of a restricted key: a
// from= list of a dozen entries and an expiry.
func BenchmarkPermits(b *testing.B) {
	k := &AuthorizedKey{}
	var err error
	if k.from, err = parseAddrPatterns("10.0.0.0/8,!10.1.0.0/16,192.168.*.*,172.16.?.1,2001:db8::/32,::1,127.0.0.1,198.51.100.0/24,203.0.113.*,fd00::/8,!fd00::1,100.64.0.0/10"); err != nil {
		b.Fatal(err)
	}
	k.expiry = time.Now().Add(time.Hour)
	remote := tcpAddr("[::ffff:100.64.1.2]:2222")
	now := time.Now()
	b.ReportAllocs()
	for range b.N {
		if err := k.Permits(remote, now); err != nil {
			b.Fatal(err)
		}
	}
}
