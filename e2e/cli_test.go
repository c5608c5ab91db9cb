package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeygenMatchesNix checks that keys from decross-store keygen are what
// Nix makes of them, and that keys made by Nix are accepted by serve.
func TestKeygenMatchesNix(t *testing.T) {
	RequireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "secret.key"), filepath.Join(dir, "public.key")
	if _, stderr, err := runTool(t, "keygen", "--name", "cache.example.org-1", "--secret-key-file", sk, "--public-key-file", pk); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	if fi, err := os.Stat(sk); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret key mode: %v, %v", fi, err)
	}
	pub, _ := os.ReadFile(pk)
	cmd := exec.CommandContext(testContext(t, time.Minute), "nix", "key", "convert-secret-to-public")
	cmd.Env = NixEnv()
	secret, _ := os.ReadFile(sk)
	cmd.Stdin = strings.NewReader(string(secret))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix key convert-secret-to-public: %v", err)
	}
	if strings.TrimSpace(string(out)) != string(pub) || !strings.HasPrefix(string(pub), "cache.example.org-1:") {
		t.Fatalf("nix derives public key %q, keygen wrote %q", out, pub)
	}
	// keygen never overwrites a key.
	if _, stderr, err := runTool(t, "keygen", "--name", "x", "--secret-key-file", sk, "--public-key-file", filepath.Join(dir, "other.pub")); err == nil || !strings.Contains(stderr, "exists") {
		t.Fatalf("keygen over an existing key: err %v, stderr %q", err, stderr)
	}
}

// TestServeRejectsBadConfig runs serve with broken inputs: each must fail
// at start, naming what is wrong.
func TestServeRejectsBadConfig(t *testing.T) {
	RequireNix(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A key made by Nix itself.
	sk := filepath.Join(dir, "nix.sk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "nix-made-1", sk, filepath.Join(dir, "nix.pk")).CombinedOutput(); err != nil {
		t.Fatalf("nix-store --generate-binary-cache-key: %v\n%s", err, out)
	}
	const native = "/nix/store/00000000000000000000000000000001-hello-2.12"
	const cross = "/nix/store/00000000000000000000000000000002-hello-aarch64-unknown-linux-gnu-2.12"
	good := write("good.json", `{"paths":[{"native":"`+native+`","cross":"`+cross+`"}]}`)
	dup := write("dup.json", `{"paths":[{"native":"`+native+`","cross":"`+cross+`"},{"native":"`+native+`","cross":"/nix/store/00000000000000000000000000000003-x"}]}`)
	notStore := write("notstore.json", `{"paths":[{"native":"/usr/bin/hello","cross":"`+cross+`"}]}`)
	auth := write("authorized_keys", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"duplicate native", []string{"--mapping", dup, "--signing-key", sk, "--authorized-keys", auth}, "native path " + native + " is already mapped by entry 0"},
		{"not a store path", []string{"--mapping", notStore, "--signing-key", sk, "--authorized-keys", auth}, `"/usr/bin/hello"`},
		{"missing mapping", []string{"--mapping", filepath.Join(dir, "none.json"), "--signing-key", sk, "--authorized-keys", auth}, "none.json"},
		{"bad signing key", []string{"--mapping", good, "--signing-key", write("bad.sk", "garbage"), "--authorized-keys", auth}, "bad.sk"},
		{"empty authorized_keys", []string{"--mapping", good, "--signing-key", sk, "--authorized-keys", auth}, "authorized_keys"},
		{"no flags", nil, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--host-key", filepath.Join(dir, "host_key"), "--cache-dir", filepath.Join(dir, "cache")}, tt.args...)
			_, stderr, err := runTool(t, args...)
			if err == nil || !strings.Contains(stderr, tt.want) {
				t.Fatalf("serve: err %v, stderr %q; want a failure mentioning %q", err, stderr, tt.want)
			}
		})
	}
}
