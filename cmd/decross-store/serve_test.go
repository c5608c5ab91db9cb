package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"golang.org/x/crypto/ssh"
)

// serveFixture is what serve needs to start, written into a fresh
// directory: a signing key, a mapping and an authorized_keys file.
type serveFixture struct {
	dir, signingKey, mapping, authorizedKeys, hostKey, cacheDir string
}

func newServeFixture(t *testing.T) serveFixture {
	t.Helper()
	dir := t.TempDir()
	sk, _, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	const native = "/nix/store/00000000000000000000000000000001-hello-2.12"
	const cross = "/nix/store/00000000000000000000000000000002-hello-aarch64-unknown-linux-gnu-2.12"
	return serveFixture{
		dir:            dir,
		signingKey:     writeFile(t, dir, "secret.key", sk.String(), 0o600),
		mapping:        writeFile(t, dir, "mapping.json", `{"paths":[{"native":"`+native+`","cross":"`+cross+`"}]}`, 0o644),
		authorizedKeys: writeFile(t, dir, "authorized_keys", string(ssh.MarshalAuthorizedKey(sshPub)), 0o644),
		hostKey:        filepath.Join(dir, "state", "ssh_host_ed25519_key"),
		cacheDir:       filepath.Join(dir, "state", "cache"),
	}
}

func (f serveFixture) config(t *testing.T, extra string) string {
	t.Helper()
	return writeFile(t, f.dir, "decross-store.toml", strings.Join([]string{
		`listen = "127.0.0.1:0"`,
		`host-key = "` + f.hostKey + `"`,
		`authorized-keys = "` + f.authorizedKeys + `"`,
		`mapping = "` + f.mapping + `"`,
		`signing-key = "` + f.signingKey + `"`,
		`cache-dir = "` + f.cacheDir + `"`,
		`shutdown-timeout = "5s"`,
		extra,
	}, "\n"), 0o644)
}

// lineWatcher collects what serve logs and hands over the first line that
// matches re.
type lineWatcher struct {
	re    *regexp.Regexp
	found chan string
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	pw    *io.PipeWriter
}

func newLineWatcher(re string) *lineWatcher {
	pr, pw := io.Pipe()
	w := &lineWatcher{re: regexp.MustCompile(re), found: make(chan string, 1), pw: pw}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.mu.Lock()
			w.buf.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			if m := w.re.FindStringSubmatch(sc.Text()); m != nil {
				w.once.Do(func() { w.found <- m[1] })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return w
}

func (w *lineWatcher) Write(b []byte) (int, error) { return w.pw.Write(b) }

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// `serve --config FILE` alone starts a real SSH server, in either log
// format, and stops on cancellation.
func TestServeConfigOnly(t *testing.T) {
	tests := []struct {
		format string
		re     string // captures the listen address from the "serving" line
	}{
		{"text", `msg=serving listen=(\S+)`},
		{"json", `^\{.*"msg":"serving","listen":"([^"]+)"`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			fx := newServeFixture(t)
			cfg := fx.config(t, `log-format = "`+tt.format+`"`)
			logs := newLineWatcher(tt.re)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr, done := startServe(t, ctx, cfg, logs)
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			banner, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
				t.Fatalf("banner %q, %v", banner, err)
			}
			if tt.format == "json" {
				for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(line), &v); err != nil {
						t.Errorf("log line is not JSON: %q: %v", line, err)
					}
				}
			}
			fi, err := os.Stat(fx.hostKey)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("generated host key: %v, %v; want mode 0600", fi, err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("serve after cancel: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("serve did not stop")
			}
		})
	}
}

// startServe runs `serve --config cfg` until ctx ends and returns the
// address its log line gives (logs captures it), and the channel serve's
// result arrives on.
func startServe(t *testing.T, ctx context.Context, cfg string, logs *lineWatcher) (string, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, []string{"--config", cfg}, io.Discard, logs) }()
	select {
	case addr := <-logs.found:
		return addr, done
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("no serving line\n%s", logs)
	}
	return "", done
}

// Like sshd, serve refuses keys that group or others have any permission
// on, and says how to fix it.
func TestServeRefusesOpenKeys(t *testing.T) {
	tests := []struct {
		what string
		mode os.FileMode
	}{
		{"signing key", 0o644},
		{"signing key", 0o640},
		{"signing key", 0o604},
		{"signing key", 0o620},
		{"host key", 0o644},
		{"host key", 0o660},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %#o", tt.what, tt.mode), func(t *testing.T) {
			fx := newServeFixture(t)
			p := fx.signingKey
			if tt.what == "host key" {
				if err := os.MkdirAll(filepath.Dir(fx.hostKey), 0o700); err != nil {
					t.Fatal(err)
				}
				// Refused on its mode, before it is parsed.
				p = writeFile(t, filepath.Dir(fx.hostKey), filepath.Base(fx.hostKey), "not a key", tt.mode)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			err := runServe(context.Background(), []string{"--config", fx.config(t, "")}, io.Discard, io.Discard)
			want := fmt.Sprintf("%s %s is accessible by group or others (mode %#o); run chmod 600 %s", tt.what, p, tt.mode, p)
			if err == nil || err.Error() != want {
				t.Fatalf("serve: %v\nwant: %s", err, want)
			}
		})
	}
}

func TestKeygenWritesSecretKey0600(t *testing.T) {
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "secret.key"), filepath.Join(dir, "public.key")
	if err := runKeygen(context.Background(), []string{"--name", "k-1", "--secret-key-file", sk, "--public-key-file", pk}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %#o, want 0600", fi.Mode().Perm())
	}
	// What keygen wrote, serve accepts.
	if _, err := loadSecretKey(sk); err != nil {
		t.Errorf("load the key keygen wrote: %v", err)
	}
}

func TestServeRejectsBadLimits(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-queue", "-1"}, "--max-queue -1: want at least 1"},
		{[]string{"--max-connections", "0"}, "--max-connections 0: want at least 1"},
		{[]string{"--max-startups-per-source", "-2"}, "--max-startups-per-source -2: want 0 (half of the total) or more"},
		{[]string{"--queue-timeout", "0s"}, "--queue-timeout 0s: want positive"},
		{[]string{"--shutdown-timeout", "-5s"}, "--shutdown-timeout -5s: want 0 or more"},
		{[]string{"--ssh-ciphers", "aes128-gcm@openssh.com,blowfish"}, `--ssh-ciphers: cipher "blowfish" is not supported (supported: ` + strings.Join(ssh.SupportedAlgorithms().Ciphers, ", ") + ")"},
		{[]string{"--stdio", "--ssh-ciphers", "aes128-ctr"}, "--ssh-ciphers is not available with --stdio: behind OpenSSH, sshd chooses the cipher"},
	} {
		args := append([]string{"--mapping", "m.json", "--signing-key", "k", "--authorized-keys", "a"}, tt.args...)
		err := runServe(t.Context(), args, io.Discard, io.Discard)
		if err == nil || err.Error() != tt.want {
			t.Errorf("serve %v = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// --http none and --metrics none turn those doors off, as --listen none
// does the SSH one: with SSH off too, nothing would be served.
func TestServeNoneTurnsDoorsOff(t *testing.T) {
	args := []string{"--mapping", "m.json", "--signing-key", "k", "--listen", "none", "--http", "none", "--metrics", "none"}
	err := runServe(t.Context(), args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--listen none turns the SSH server off: give --http") {
		t.Fatalf("serve %v = %v, want the no-door refusal", args, err)
	}
}

// ssh-ciphers (here from the configuration file) is what the SSH server
// offers: a client that knows only ChaCha20 is refused by default on an
// x86-64 CPU with AES-NI and gets through the cipher negotiation (to fail
// authentication, having no key) once the list includes it.
func TestServeSSHCiphers(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		negotiates  bool
	}{
		{"offered", `ssh-ciphers = "aes128-gcm@openssh.com, chacha20-poly1305@openssh.com"`, true},
		{"not offered", `ssh-ciphers = "aes128-gcm@openssh.com"`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newServeFixture(t)
			logs := newLineWatcher(`msg=serving listen=(\S+)`)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel() // also when startServe fails the test
			addr, done := startServe(t, ctx, fx.config(t, tt.extra), logs)
			defer func() {
				cancel()
				<-done
			}()
			cfg := &ssh.ClientConfig{User: "nix", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
			cfg.Ciphers = []string{ssh.CipherChaCha20Poly1305}
			_, err := ssh.Dial("tcp", addr, cfg)
			switch {
			case err == nil:
				t.Fatal("a client without a key was let in")
			case tt.negotiates && !strings.Contains(err.Error(), "unable to authenticate"):
				t.Errorf("dial: %v; want the cipher negotiated and authentication refused", err)
			case !tt.negotiates && !strings.Contains(err.Error(), "no common algorithm for client to server cipher"):
				t.Errorf("dial: %v; want no common cipher", err)
			}
		})
	}
}

// Key names a signature cannot usefully carry are refused, by keygen and
// when a signing key is loaded (a byte-order mark an editor added).
func TestKeyNames(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"a:b", `--name: key name "a:b" has U+003A at byte 1; Nix cannot use a key whose name holds a colon, white space or an invisible character`},
		{"a b", `--name: key name "a b" has U+0020 at byte 1`},
		{"\ufeffk-1", `--name: key name "\ufeffk-1" has U+FEFF at byte 0`},
	} {
		dir := t.TempDir()
		sk, pk := filepath.Join(dir, "s"), filepath.Join(dir, "p")
		err := runKeygen(context.Background(), []string{"--name", tt.name, "--secret-key-file", sk, "--public-key-file", pk}, io.Discard, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("keygen --name %q: %v, want %q", tt.name, err, tt.want)
		}
		if _, err := os.Stat(sk); !os.IsNotExist(err) {
			t.Errorf("keygen --name %q left %s", tt.name, sk)
		}
	}

	key, _, err := signature.GenerateKeypair("k-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, t.TempDir(), "secret.key", "\ufeff"+key.String(), 0o600)
	if _, err := loadSecretKey(p); err == nil || !strings.Contains(err.Error(), `key name "\ufeffk-1" has U+FEFF at byte 0`) {
		t.Errorf("load a key with a byte-order mark: %v", err)
	}
}

// A key file keygen could not finish (a full disk) is removed, so that the
// next run does not fail on "file exists".
func TestWriteNewRemovesPartialFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	err := createWith(path, 0o600, func(f *os.File) error {
		if _, err := f.WriteString("k-1:"); err != nil {
			return err
		}
		return syscall.ENOSPC
	})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("createWith: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", path, err)
	}
}
