package sshserver

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    command
		wantErr string // substring; empty means success
	}{
		{in: "nix-daemon --stdio", want: command{program: "nix-daemon"}},
		{in: "  nix-daemon\t--stdio\n", want: command{program: "nix-daemon"}},
		{in: "/usr/bin/nix-daemon --stdio", want: command{program: "/usr/bin/nix-daemon"}},
		{in: "/nix/var/nix/profiles/default/bin/nix-daemon --stdio", want: command{program: "/nix/var/nix/profiles/default/bin/nix-daemon"}},
		{in: "bin/nix-daemon --stdio", want: command{program: "bin/nix-daemon"}},
		{in: "/abs/path/nix-daemon --stdio --store 'x y'", want: command{program: "/abs/path/nix-daemon", store: "x y"}},
		// Nix 2.8 quotes the store with shellEscape: embedded quotes become '\''.
		{in: `nix-daemon --stdio --store '/tmp/it'\''s'`, want: command{program: "nix-daemon", store: "/tmp/it's"}},
		{in: "nix-daemon --stdio --store=daemon", want: command{program: "nix-daemon", store: "daemon"}},
		{in: "nix-daemon --store auto --stdio", want: command{program: "nix-daemon", store: "auto"}},
		{in: `nix-daemon --stdio --store "/a \"b\" \\c \$d"`, want: command{program: "nix-daemon", store: `/a "b" \c $d`}},
		{in: `nix-daemon --stdio --store=""`, want: command{program: "nix-daemon", store: ""}},
		{in: `nix-daemon --stdio --store a\ b`, want: command{program: "nix-daemon", store: "a b"}},
		{in: "nix-daemon --stdio --process-ops", want: command{program: "nix-daemon", processOps: true}},
		{in: "nix-daemon --process-ops --store x --stdio", want: command{program: "nix-daemon", store: "x", processOps: true}},
		{in: "'nix-daemon' \"--stdio\"", want: command{program: "nix-daemon"}},
		{in: "nix-daemon \\\n --stdio", want: command{program: "nix-daemon"}},

		{in: "nix-daemon", wantErr: "must be run with --stdio"},
		{in: "nix-daemon --stdio extra", wantErr: `unsupported argument "extra"`},
		{in: "nix-daemon --stdio --stdio", wantErr: "--stdio given twice"},
		{in: "nix-daemon --stdio --process-ops --process-ops", wantErr: "--process-ops given twice"},
		{in: "nix-daemon --stdio --store a --store=b", wantErr: "--store given twice"},
		{in: "nix-daemon --stdio --store", wantErr: "--store needs a value"},
		{in: "nix-daemon --daemon", wantErr: `unsupported argument "--daemon"`},
		{in: "bash -c 'nix-daemon --stdio'", wantErr: `command "bash" is not supported`},
		{in: "nix-store --serve --write", wantErr: "legacy ssh:// store protocol"},
		{in: "/run/current-system/sw/bin/nix-store --serve", wantErr: "use an ssh-ng:// store URL"},
		{in: "nix-store --query x", wantErr: `command "nix-store" is not supported`},
		{in: "nix-daemon-evil --stdio", wantErr: "is not supported"},
		{in: "nix-daemon/ --stdio", wantErr: "is not supported"},
		{in: "'' --stdio", wantErr: "is not supported"},
		{in: "", wantErr: "empty command"},
		{in: "   ", wantErr: "empty command"},
		{in: "nix-daemon --stdio; id", wantErr: "shell syntax"},
		{in: "nix-daemon --stdio && id", wantErr: "shell syntax"},
		{in: "nix-daemon --stdio | tee", wantErr: "shell syntax"},
		{in: "nix-daemon --stdio > /tmp/x", wantErr: "shell syntax"},
		{in: "nix-daemon --stdio --store $HOME", wantErr: "shell syntax"},
		{in: "nix-daemon --stdio --store `id`", wantErr: "shell syntax"},
		{in: `nix-daemon --stdio --store "$(id)"`, wantErr: "shell expansion"},
		{in: "nix-daemon --stdio # comment", wantErr: "shell comment"},
		{in: "nix-daemon --stdio --store 'x", wantErr: "unterminated single quote"},
		{in: `nix-daemon --stdio --store "x`, wantErr: "unterminated double quote"},
		{in: `nix-daemon --stdio \`, wantErr: "ends with a backslash"},
		{in: "nix-daemon\x00 --stdio", wantErr: "NUL"},
		{in: "nix-daemon --stdio " + strings.Repeat("x", maxCommandLen), wantErr: "command too long"},
		{in: "nix-daemon" + strings.Repeat(" --stdio", maxCommandWords), wantErr: "too many words"},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 60)], func(t *testing.T) {
			got, err := parseCommand(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseCommand(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans several lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCommand(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("parseCommand(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCommandLegacyServeSentinel(t *testing.T) {
	if _, err := parseCommand("nix-store --serve --write"); !errors.Is(err, errLegacyServe) {
		t.Fatalf("got %v, want errLegacyServe", err)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"nix-daemon --stdio",
		"/nix/var/nix/profiles/default/bin/nix-daemon --stdio --store 'x y'",
		`nix-daemon --stdio --store '/tmp/it'\''s' --process-ops`,
		`nix-daemon --store="a \"b\"" --stdio`,
		"nix-store --serve --write",
		"bash -c 'id; nix-daemon --stdio'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCommand(s)
		if err != nil {
			if c != (command{}) {
				t.Fatalf("error %v with non-zero result %+v", err, c)
			}
			return
		}
		if len(s) > maxCommandLen {
			t.Fatalf("accepted %d-byte command", len(s))
		}
		words, err := splitShell(s)
		if err != nil {
			t.Fatalf("parseCommand accepted %q but splitShell fails: %v", s, err)
		}
		if words[0] != c.program || !strings.HasSuffix("/"+c.program, "/nix-daemon") {
			t.Fatalf("accepted program %q from %q", c.program, s)
		}
		// Re-quoting the words must give back the same command.
		var b strings.Builder
		for i, w := range words {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString("'" + strings.ReplaceAll(w, "'", `'\''`) + "'")
		}
		if b.Len() > maxCommandLen {
			return
		}
		c2, err := parseCommand(b.String())
		if err != nil || c2 != c {
			t.Fatalf("requoted %q parses to %+v, %v; want %+v", b.String(), c2, err, c)
		}
	})
}
