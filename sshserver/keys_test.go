package sshserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestLoadOrCreateHostKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "ssh")
	path := filepath.Join(dir, "host_ed25519_key")

	s1, err := LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if s1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("generated %s key, want ed25519", s1.PublicKey().Type())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %#o, want 0600", st.Mode().Perm())
	}
	dst, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %#o, want 0700", dst.Mode().Perm())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".hostkey-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n")) {
		t.Errorf("key file is not in OpenSSH format: %.40q", data)
	}

	s2, err := LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1.PublicKey().Marshal(), s2.PublicKey().Marshal()) {
		t.Fatal("reloaded key differs from the generated one")
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, after) {
		t.Fatal("loading rewrote the key file")
	}
}

func TestLoadOrCreateHostKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	const n = 8
	keys := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := LoadOrCreateHostKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = s.PublicKey().Marshal()
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if !bytes.Equal(keys[0], keys[i]) {
			t.Fatal("concurrent callers got different host keys")
		}
	}
}

func TestLoadHostKeyErrors(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	locked, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		mode os.FileMode
		want string
	}{
		{"world readable", pem.EncodeToMemory(plain), 0o644, "too open"},
		{"group readable", pem.EncodeToMemory(plain), 0o640, "too open"},
		{"garbage", []byte("not a key\n"), 0o600, "load host key"},
		{"passphrase", pem.EncodeToMemory(locked), 0o600, "passphrase-protected"},
		{"huge", bytes.Repeat([]byte("A"), maxHostKeyFile+1), 0o600, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(path, tt.data, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateHostKey(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, tt.data) {
				t.Fatal("a bad key file was overwritten")
			}
		})
	}
}

func TestLoadAuthorizedKeys(t *testing.T) {
	k1, k2, k3 := newSigner(t).PublicKey(), newSigner(t).PublicKey(), newSigner(t).PublicKey()
	line := func(k ssh.PublicKey) string { return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(k)), "\n") }

	tests := []struct {
		name    string
		content string
		want    []ssh.PublicKey
		wantErr string
	}{
		{
			name: "comments options blanks",
			content: "# decross-store clients\n\n" +
				line(k1) + " alice@laptop\n" +
				"   \t\n" +
				`restrict,no-pty,NO-X11-Forwarding,from="127.0.0.1,::1" ` + line(k2) + " builder\r\n" +
				"  # indented comment\n" +
				line(k3),
			want: []ssh.PublicKey{k1, k2, k3},
		},
		{
			name:    "bad line names its number",
			content: "# header\n" + line(k1) + "\nssh-ed25519 AAAAnot-base64 bob\n" + line(k2) + "\n",
			wantErr: ":3: not a valid public key line",
		},
		{
			name:    "private key pasted by mistake",
			content: "-----BEGIN OPENSSH PRIVATE KEY-----\n",
			wantErr: ":1: not a valid public key line",
		},
		{
			name:    "forced command names its line",
			content: line(k1) + "\n" + `command="nix-daemon --stdio" ` + line(k2) + "\n",
			wantErr: ":2: option command is not supported",
		},
		{
			name:    "no keys",
			content: "# nobody yet\n\n",
			wantErr: "no public keys found",
		},
		{
			name:    "overlong line",
			content: line(k1) + "\n" + strings.Repeat("x", maxAuthorizedKeysLine+1) + "\n",
			wantErr: ":2: line longer than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "authorized_keys")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadAuthorizedKeys(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d keys, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i].Marshal(), tt.want[i].Marshal()) {
					t.Errorf("key %d differs", i)
				}
			}
		})
	}
	if _, err := LoadAuthorizedKeys(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file gave no error")
	}
}

func FuzzParseAuthorizedKeys(f *testing.F) {
	f.Add([]byte("# comment\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWEJSl0oFXDBioIWttFQF/oJhMYWnuDQhCZH+P+QfLS alice\n"))
	f.Add([]byte(`command="nix-daemon --stdio",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWEJSl0oFXDBioIWttFQF/oJhMYWnuDQhCZH+P+QfLS` + "\r\n"))
	f.Add([]byte("ssh-ed25519 AAAAnot-base64\n"))
	f.Add([]byte(`from="10.0.0.0/8,!10.1.2.*",expiry-time="20300101Z",restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWEJSl0oFXDBioIWttFQF/oJhMYWnuDQhCZH+P+QfLS` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseAuthorizedKeys(bytes.NewReader(data), "fuzz", time.UTC)
		if err != nil {
			if keys != nil {
				t.Fatalf("error %v with %d keys", err, len(keys))
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		// Restrictions that parsed must be checkable.
		for _, k := range keys {
			_ = k.(*AuthorizedKey).Permits(&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 22}, time.Unix(1e9, 0))
		}
		// What was accepted must survive a round trip through the format.
		var buf bytes.Buffer
		for _, k := range keys {
			buf.Write(ssh.MarshalAuthorizedKey(k))
		}
		again, err := parseAuthorizedKeys(&buf, "fuzz", time.UTC)
		if err != nil || len(again) != len(keys) {
			t.Fatalf("round trip: %d keys, %v; want %d", len(again), err, len(keys))
		}
		for i := range keys {
			if !bytes.Equal(keys[i].Marshal(), again[i].Marshal()) {
				t.Fatalf("key %d changed in the round trip", i)
			}
		}
	})
}
