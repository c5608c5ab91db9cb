package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSubstitutersFallThrough: with two decross-stores as substituters, a
// path the first serves comes from the first, and a path the first cannot
// serve (the leaky script, whose bash it does not map) is a miss there:
// Nix takes it from the second, which maps bash.
func TestSubstitutersFallThrough(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	strict, _ := servableMapping(t, ex, work)
	first := startServer(t, strict)
	second := startServer(t, ex.MappingFile) // maps the build-platform bash too

	sshConfig := filepath.Join(work, "ssh_config")
	var cfg strings.Builder
	for name, s := range map[string]*server{"decross-first": first, "decross-second": second} {
		fmt.Fprintf(&cfg, "Host %s\n  HostName 127.0.0.1\n  Port %s\n  User root\n  IdentityFile %s\n"+
			"  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n", name, s.port, s.clientKey)
	}
	if err := os.WriteFile(sshConfig, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	env := NixEnv()
	for i, kv := range env {
		if strings.HasPrefix(kv, "NIX_CONFIG=") {
			env[i] = kv + "\nrequire-sigs = true" +
				"\ntrusted-public-keys = " + first.publicKey + " " + second.publicKey +
				"\nsubstituters = ssh-ng://decross-first ssh-ng://decross-second"
		}
	}
	env = append(env, "NIX_SSHOPTS=-F "+sshConfig)

	dest := filepath.Join(work, "dest")
	t.Cleanup(func() { makeWritable(t, dest) })
	ctx := testContext(t, 2*time.Minute)
	realise := func(p string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "nix-store", "--store", dest, "--realise", p)
		cmd.Env = env
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("nix-store --realise %s: %v\n%s", p, err, stderr.String())
		}
		return stderr.String()
	}
	leaky, hello := ex.Get(t, "leaky"), ex.Get(t, "hello")
	if out, want := realise(hello.Native), "copying path '"+hello.Native+"' from 'ssh-ng://decross-first'"; !strings.Contains(out, want) {
		t.Errorf("hello: want %q in:\n%s", want, out)
	}
	if out, want := realise(leaky.Native), "copying path '"+leaky.Native+"' from 'ssh-ng://decross-second'"; !strings.Contains(out, want) {
		t.Errorf("leaky script: want %q in:\n%s", want, out)
	}
}
