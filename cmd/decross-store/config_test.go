package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; the tests need it exact.
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.toml", `# comment
listen = "0.0.0.0:2222"
host-key = "/var/lib/decross-store/ssh_host_ed25519_key"
cache-dir = "/var/lib/decross-store/cache"
cache-max-size = "50GiB"
shutdown-timeout = "45s"
stdio = false
log-format = "json"
jobs = 3 # prefetch's: accepted, not applied to serve
`, 0o644)
	tests := []struct {
		name    string
		args    []string
		listen  string
		timeout time.Duration
		format  string
	}{
		{"file only", []string{"--config", cfg}, "0.0.0.0:2222", 45 * time.Second, "json"},
		{"flags override the file", []string{"--listen", "127.0.0.1:0", "--config", cfg, "--shutdown-timeout=1s"}, "127.0.0.1:0", time.Second, "json"},
		{"no file", []string{"--listen", "127.0.0.1:0"}, "127.0.0.1:0", 30 * time.Second, "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, f := newServeFlags(io.Discard)
			if err := parseFlags(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			if f.listen != tt.listen || f.shutdownTimeout != tt.timeout || f.logFormat != tt.format {
				t.Errorf("listen %q, shutdown-timeout %v, log-format %q; want %q, %v, %q", f.listen, f.shutdownTimeout, f.logFormat, tt.listen, tt.timeout, tt.format)
			}
			if tt.args[0] != "--config" && f.config == "" {
				return
			}
			if f.cacheDir != "/var/lib/decross-store/cache" || f.hostKey != "/var/lib/decross-store/ssh_host_ed25519_key" || f.cacheMaxSize != 50<<30 {
				t.Errorf("cache-dir %q, host-key %q, cache-max-size %v: not taken from the file", f.cacheDir, f.hostKey, f.cacheMaxSize)
			}
		})
	}
}

// One file serves both commands: prefetch takes the keys it shares with
// serve and ignores serve's others.
func TestConfigSharedByPrefetch(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.toml", `
listen = "0.0.0.0:2222"
signing-key = "/etc/decross-store/secret.key"
mapping = "/etc/decross-store/mapping.json"
cache-dir = "/var/lib/decross-store/cache"
upstream = "unix:///run/nix.sock"
cache-max-size = 1073741824
jobs = 5
`, 0o644)
	fs, f := newPrefetchFlags(io.Discard)
	if err := parseFlags(fs, []string{"--config", cfg, "--jobs", "2"}); err != nil {
		t.Fatal(err)
	}
	want := prefetchFlags{config: cfg, mapping: "/etc/decross-store/mapping.json", upstream: upstreamFlags{addr: "unix:///run/nix.sock"},
		cacheDir: "/var/lib/decross-store/cache", logFormat: "text", jobs: 2, cacheMaxSize: 1 << 30}
	if !reflect.DeepEqual(*f, want) {
		t.Errorf("got %+v\nwant %+v", *f, want)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string // all in the error
	}{
		{"unknown key", "listen = \"x\"\n\nlissten = \"y\"\n", []string{":3:", `unknown key "lissten"`}},
		{"key of no command", "map = 1\n", []string{":1:", `unknown key "map"`}},
		{"string flag given a number", "\nlisten = 2222\n", []string{":2:", `key "listen"`, "an integer, want a string"}},
		{"bool flag given a string", "stdio = \"yes\"\n", []string{":1:", `key "stdio"`, "a string, want a boolean"}},
		{"bad duration", "\n\n\nshutdown-timeout = \"soon\"\n", []string{":4:", `key "shutdown-timeout"`, `invalid value "soon"`}},
		{"bad size", "cache-max-size = \"50 gigs\"\n", []string{":1:", `key "cache-max-size"`, `invalid size "50 gigs"`}},
		{"duration without unit", "shutdown-timeout = 30\n", []string{":1:", `key "shutdown-timeout"`, `an integer, want a string such as "30s"`}},
		{"array", "listen = [\"a\", \"b\"]\n", []string{":1:", `key "listen"`, "an array"}},
		{"date", "listen = 2024-01-01\n", []string{":1:", `key "listen"`, "a date"}},
		{"table", "listen = \"a\"\n[serve]\nlisten = \"b\"\n", []string{":2:", "table [serve]", "top-level keys"}},
		{"table named like a flag", "[listen]\nport = 1\n", []string{":1:", "table [listen]"}},
		{"table named like another command's flag", "[jobs]\nbogus = 1\n", []string{":1:", "table [jobs]"}},
		{"dotted key", "serve.listen = \"b\"\n", []string{":1:", `unknown key "serve.listen"`}},
		{"nested config", "config = \"other.toml\"\n", []string{":1:", `key "config"`}},
		{"syntax error", "listen = \"a\"\nhost-key = \n", []string{":2:"}},
		{"duplicate key", "listen = \"a\"\nlisten = \"b\"\n", []string{":2:", "listen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeFile(t, t.TempDir(), "c.toml", tt.file, 0o644)
			fs, _ := newServeFlags(io.Discard)
			err := parseFlags(fs, []string{"--config", cfg})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append(tt.want, cfg) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("prefetch's own type error", func(t *testing.T) {
		cfg := writeFile(t, t.TempDir(), "c.toml", "jobs = \"many\"\n", 0o644)
		fs, _ := newPrefetchFlags(io.Discard)
		if err := parseFlags(fs, []string{"--config", cfg}); err == nil || !strings.Contains(err.Error(), `:1: key "jobs": invalid value "many"`) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		fs, _ := newServeFlags(io.Discard)
		if err := parseFlags(fs, []string{"--config", "/nonexistent/c.toml"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/c.toml") {
			t.Errorf("err %v", err)
		}
	})
}

// sizeValue stands for a flag type the config code knows nothing about:
// it must get the file's text through Set, whatever the TOML type.
type sizeValue uint64

func (s *sizeValue) String() string { return strconv.FormatUint(uint64(*s), 10) }
func (s *sizeValue) Set(v string) error {
	mult := uint64(1)
	if n, ok := strings.CutSuffix(v, "GiB"); ok {
		v, mult = n, 1<<30
	}
	n, err := strconv.ParseUint(v, 10, 64)
	*s = sizeValue(n * mult)
	return err
}

func TestConfigAnyFlagType(t *testing.T) {
	tests := []struct {
		value string
		want  sizeValue
	}{
		{`"50GiB"`, 50 << 30},
		{`1024`, 1024},
	}
	for _, tt := range tests {
		cfg := writeFile(t, t.TempDir(), "c.toml", "cache-max-size = "+tt.value+"\n", 0o644)
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		var size sizeValue
		fs.Var(&size, "cache-max-size", "")
		fs.String(configFlag, "", "")
		if err := fs.Parse([]string{"--config", cfg}); err != nil {
			t.Fatal(err)
		}
		if err := applyConfig(fs, cfg, map[string]bool{"cache-max-size": true}); err != nil {
			t.Fatalf("%s: %v", tt.value, err)
		}
		if size != tt.want {
			t.Errorf("cache-max-size = %s: got %d, want %d", tt.value, size, tt.want)
		}
	}
}

// Every flag of serve and prefetch is a key, with nothing to register.
func TestConfigKeysAreFlags(t *testing.T) {
	keys := configKeys()
	for _, fs := range []func() *flag.FlagSet{
		func() *flag.FlagSet { fs, _ := newServeFlags(io.Discard); return fs },
		func() *flag.FlagSet { fs, _ := newPrefetchFlags(io.Discard); return fs },
	} {
		fs().VisitAll(func(f *flag.Flag) {
			if !keys[f.Name] && f.Name != configFlag {
				t.Errorf("flag --%s is not a config key", f.Name)
			}
		})
	}
	if keys[configFlag] {
		t.Error("config is a key of the file itself")
	}
}
