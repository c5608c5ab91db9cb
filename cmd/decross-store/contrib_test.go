package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitFile is a systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// The unit must keep what the README promises of it; systemd-analyze
// verify (scripts/test) checks that systemd accepts it.
func TestContribUnit(t *testing.T) {
	u := readUnit(t, filepath.Join("..", "..", "contrib", "decross-store.service"))
	svc := u["Service"]
	const config = "/etc/decross-store/decross-store.toml"
	required := []struct{ key, value string }{
		{"ExecStart", "/usr/local/bin/decross-store serve --config " + config},
		{"User", "decross-store"},
		{"StateDirectory", "decross-store"},
		{"SupplementaryGroups", "nix-users"},
		{"Restart", "on-failure"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"CapabilityBoundingSet", ""},
		{"RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"},
		{"UMask", "0077"},
	}
	for _, r := range required {
		if got := svc[r.key]; len(got) != 1 || got[0] != r.value {
			t.Errorf("[Service] %s = %q, want exactly %q", r.key, got, r.value)
		}
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q", got)
	}

	// The example configuration is what ExecStart reads: serve accepts it,
	// its state lives in StateDirectory=, and the unit waits longer than
	// serve's drain before it kills.
	fs, f := newServeFlags(io.Discard)
	if err := parseFlags(fs, []string{"--config", filepath.Join("..", "..", "contrib", "decross-store.toml")}); err != nil {
		t.Fatalf("contrib/decross-store.toml: %v", err)
	}
	state := "/var/lib/" + svc["StateDirectory"][0] + "/"
	for _, p := range []string{f.hostKey, f.cacheDir} {
		if !strings.HasPrefix(p, state) {
			t.Errorf("%s is outside the state directory %s, which is the only writable place", p, state)
		}
	}
	if f.mapping == "" || f.signingKey == "" || f.authorizedKeys == "" || f.stdio {
		t.Errorf("the example configuration is not enough to serve: %+v", *f)
	}
	stop, err := time.ParseDuration(svc["TimeoutStopSec"][0])
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= f.shutdownTimeout {
		t.Errorf("TimeoutStopSec=%v does not exceed shutdown-timeout %v: systemd would kill sessions that are draining", stop, f.shutdownTimeout)
	}

	// The sysusers file creates the user the unit runs as.
	sysusers, err := os.ReadFile(filepath.Join("..", "..", "contrib", "decross-store.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(sysusers), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "u" && fields[1] == svc["User"][0] {
			found = true
		}
	}
	if !found {
		t.Errorf("contrib/decross-store.sysusers does not create user %s", svc["User"][0])
	}
}
