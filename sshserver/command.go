package sshserver

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Exec commands come from the network, so parsing is bounded before any
// work is done. Real commands are a few dozen bytes.
const (
	maxCommandLen   = 8 << 10
	maxCommandWords = 64
)

// command is an accepted `nix-daemon --stdio` invocation.
type command struct {
	program    string // argv[0] as sent, possibly a full path
	store      string // value of --store, empty if absent
	processOps bool   // --process-ops was given
}

// errLegacyServe is returned for `nix-store --serve`, the command behind the
// ssh:// store type, so the user is told which URL scheme to use instead.
var errLegacyServe = errors.New("nix-store --serve (the legacy ssh:// store protocol) is not supported; use an ssh-ng:// store URL")

// parseCommand splits an exec request the way a POSIX shell would and
// accepts only nix-daemon --stdio with the options Nix itself passes. The
// error text is meant for the remote user's terminal.
func parseCommand(s string) (command, error) {
	words, err := splitShell(s)
	if err != nil {
		return command{}, err
	}
	if len(words) == 0 {
		return command{}, errors.New("empty command; this server only runs nix-daemon --stdio (use an ssh-ng:// store URL)")
	}
	prog := words[0]
	base := ""
	if prog != "" && !strings.HasSuffix(prog, "/") {
		base = path.Base(prog)
	}
	switch base {
	case "nix-daemon":
	case "nix-store":
		for _, w := range words[1:] {
			if w == "--serve" {
				return command{}, errLegacyServe
			}
		}
		fallthrough
	default:
		return command{}, fmt.Errorf("command %q is not supported; this server only runs nix-daemon --stdio (use an ssh-ng:// store URL)", clip(prog))
	}

	c := command{program: prog}
	var stdio, haveStore bool
	args := words[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--stdio":
			if stdio {
				return command{}, errors.New("nix-daemon: --stdio given twice")
			}
			stdio = true
		case a == "--process-ops":
			if c.processOps {
				return command{}, errors.New("nix-daemon: --process-ops given twice")
			}
			c.processOps = true
		case a == "--store" || strings.HasPrefix(a, "--store="):
			if haveStore {
				return command{}, errors.New("nix-daemon: --store given twice")
			}
			haveStore = true
			if v, ok := strings.CutPrefix(a, "--store="); ok {
				c.store = v
				break
			}
			if i+1 >= len(args) {
				return command{}, errors.New("nix-daemon: --store needs a value")
			}
			i++
			c.store = args[i]
		default:
			return command{}, fmt.Errorf("nix-daemon: unsupported argument %q", clip(a))
		}
	}
	if !stdio {
		return command{}, errors.New("nix-daemon must be run with --stdio; use an ssh-ng:// store URL")
	}
	return c, nil
}

// splitShell splits s into words following POSIX sh quoting: single quotes
// are literal, double quotes honour \ before $ ` " \ and newline, and an
// unquoted backslash escapes the next byte. Anything a shell would expand or
// treat as an operator is an error rather than being taken literally, since
// no shell runs here and guessing its result would be wrong.
func splitShell(s string) ([]string, error) {
	if len(s) > maxCommandLen {
		return nil, fmt.Errorf("command too long (%d bytes, limit %d)", len(s), maxCommandLen)
	}
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	flush := func() error {
		if !inWord {
			return nil
		}
		if len(words) == maxCommandWords {
			return fmt.Errorf("command has too many words (limit %d)", maxCommandWords)
		}
		words = append(words, cur.String())
		cur.Reset()
		inWord = false
		return nil
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch b {
		case 0:
			return nil, errors.New("command contains a NUL byte")
		case ' ', '\t', '\n':
			if err := flush(); err != nil {
				return nil, err
			}
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("command has an unterminated single quote")
			}
			lit := s[i+1 : i+1+end]
			if strings.IndexByte(lit, 0) >= 0 {
				return nil, errors.New("command contains a NUL byte")
			}
			cur.WriteString(lit)
			inWord = true
			i += end + 1
		case '"':
			inWord = true
			closed := false
			for i++; i < len(s); i++ {
				c := s[i]
				if c == '"' {
					closed = true
					break
				}
				switch c {
				case 0:
					return nil, errors.New("command contains a NUL byte")
				case '$', '`':
					return nil, fmt.Errorf("command uses shell expansion (%q), which is not supported", c)
				case '\\':
					if i+1 < len(s) {
						switch n := s[i+1]; n {
						case '$', '`', '"', '\\':
							cur.WriteByte(n)
							i++
							continue
						case '\n':
							i++
							continue
						}
					}
				}
				cur.WriteByte(c)
			}
			if !closed {
				return nil, errors.New("command has an unterminated double quote")
			}
		case '\\':
			if i+1 >= len(s) {
				return nil, errors.New("command ends with a backslash")
			}
			i++
			switch s[i] {
			case '\n': // line continuation
			case 0:
				return nil, errors.New("command contains a NUL byte")
			default:
				cur.WriteByte(s[i])
				inWord = true
			}
		case ';', '&', '|', '<', '>', '(', ')', '$', '`':
			return nil, fmt.Errorf("command uses shell syntax (%q), which is not supported", b)
		case '#':
			if !inWord {
				return nil, errors.New("command contains a shell comment, which is not supported")
			}
			cur.WriteByte(b)
		default:
			cur.WriteByte(b)
			inWord = true
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return words, nil
}

// clip keeps client-supplied text in error messages and logs to one
// readable line.
func clip(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
