package sshserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decross-store/decross-store/internal/testenv"
)

// writeKey stores priv in OpenSSH format for external clients.
func writeKey(t *testing.T, priv ed25519.PrivateKey) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(priv, "test client")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *testEnv) port(t *testing.T) string {
	t.Helper()
	_, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestOpenSSHClient drives the server with the system's ssh binary, the
// program Nix itself runs for ssh-ng:// stores.
func TestOpenSSHClient(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		testenv.SkipOrFail(t, "OpenSSH client not installed: %v", err)
	}
	env := startServer(t, reverseHandler, nil)
	key := writeKey(t, env.priv)
	common := []string{
		"-F", "/dev/null", // ignore the user's configuration
		"-p", env.port(t), "-i", key,
		"-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
	}
	input := strings.Repeat("nar bytes ", 50000)

	tests := []struct {
		name       string
		args       []string // after the common options
		stdin      string
		wantStdout string
		wantStderr string
		wantStatus int
	}{
		{
			name:       "plain",
			args:       append(append([]string{}, common...), "nix@127.0.0.1", "nix-daemon --stdio"),
			stdin:      input,
			wantStdout: reversed(input),
		},
		{
			// Nix 2.8 runs: ssh HOST -x -a [opts] 'CMD --stdio --store '\''X'\'''
			// plus -oCompression=yes for ?compress=true, which falls back to
			// none against this server.
			name:       "as nix 2.8 invokes it",
			args:       append(append([]string{"nix@127.0.0.1", "-x", "-a", "-oCompression=yes"}, common...), "/nix/var/nix/profiles/default/bin/nix-daemon --stdio --store '/tmp/some store'"),
			stdin:      "protocol",
			wantStdout: "locotorp",
		},
		{
			// Nix 2.20+ passes argv words after "--"; ssh joins them.
			name:       "argv words after --",
			args:       append(append([]string{"-x", "-a"}, common...), "nix@127.0.0.1", "--", "nix-daemon", "--stdio", "--process-ops"),
			stdin:      "ops",
			wantStdout: "spo",
		},
		{
			name:       "legacy nix-store --serve",
			args:       append(append([]string{}, common...), "nix@127.0.0.1", "nix-store --serve --write"),
			wantStderr: "decross-store: nix-store --serve (the legacy ssh:// store protocol) is not supported; use an ssh-ng:// store URL\n",
			wantStatus: 127,
		},
		{
			name:       "other command",
			args:       append(append([]string{}, common...), "nix@127.0.0.1", "id"),
			wantStderr: `decross-store: command "id" is not supported; this server only runs nix-daemon --stdio (use an ssh-ng:// store URL)` + "\n",
			wantStatus: 127,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshBin, tt.args...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus {
				t.Fatalf("exit status %d, want %d; stderr %q", status, tt.wantStatus, errb.String())
			}
			if out.String() != tt.wantStdout {
				t.Errorf("stdout: got %d bytes, want %d", out.Len(), len(tt.wantStdout))
			}
			if errb.String() != tt.wantStderr {
				t.Errorf("stderr %q, want %q", errb.String(), tt.wantStderr)
			}
		})
	}

	t.Run("shell refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sshBin, append(append([]string{"-T"}, common...), "nix@127.0.0.1")...)
		cmd.Stdin = strings.NewReader("id\n")
		outb, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("shell session succeeded: %q", outb)
		}
		// The explanation on stderr races with ssh tearing the channel
		// down after the failure reply, so either text is acceptable.
		if !strings.Contains(string(outb), "interactive shells are not available") &&
			!strings.Contains(string(outb), "shell request failed") {
			t.Errorf("output %q does not report the refusal", outb)
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		other := writeKey(t, newEd25519(t))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{}, common...)
		for i := range args {
			if args[i] == key {
				args[i] = other
			}
		}
		cmd := exec.CommandContext(ctx, sshBin, append(args, "nix@127.0.0.1", "nix-daemon --stdio")...)
		cmd.Stdin = strings.NewReader("")
		outb, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatal("unknown key accepted")
		}
		if !strings.Contains(string(outb), "Permission denied (publickey)") {
			t.Errorf("output %q", outb)
		}
	})
}

// TestOpenSSHClientToldWhyRefused: the system's ssh, as Nix runs it (with
// LogLevel=ERROR), shows the user why the server turned it away, both
// before the handshake and after authentication.
func TestOpenSSHClientToldWhyRefused(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		testenv.SkipOrFail(t, "OpenSSH client not installed: %v", err)
	}
	tests := []struct {
		name      string
		configure func(*Server)
		occupy    func(t *testing.T, env *testEnv) // takes what the client would need
		want      string                           // the line ssh prints; %s is the port
		status    int
	}{
		{
			name: "queue full",
			configure: func(s *Server) {
				s.MaxStartups = 1
				s.MaxQueue = 1
			},
			occupy: func(t *testing.T, env *testEnv) {
				stall(t, "127.0.0.1", env.addr)
				dialFrom(t, "127.0.0.1", env.addr)
				env.waitQueued(t, 1)
			},
			want:   "Received disconnect from 127.0.0.1 port %s:12: too many connections from 127.0.0.1: 1 in progress and 1 waiting; try again later",
			status: 255,
		},
		{
			name: "connection limit",
			configure: func(s *Server) {
				s.MaxConnections = 1
				s.QueueTimeout = 50 * time.Millisecond
			},
			occupy: func(t *testing.T, env *testEnv) {
				echoOK(t, env.mustDial(t))
			},
			want:   "decross-store: too many connections: no connection slot free within 50ms; try again later",
			status: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startServer(t, reverseHandler, tt.configure)
			tt.occupy(t, env)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-p", env.port(t), "-i", writeKey(t, env.priv),
				"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "nix@127.0.0.1", "nix-daemon --stdio")
			cmd.Stdin = strings.NewReader("")
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.status {
				t.Fatalf("ssh: %v, want exit status %d; stderr %q", err, tt.status, errb.String())
			}
			want := strings.Replace(tt.want, "%s", env.port(t), 1)
			if got := strings.TrimSpace(errb.String()); got != want {
				t.Errorf("ssh printed %q, want %q", got, want)
			}
		})
	}
}

// TestOpenSSHCipher checks the cipher the system's ssh, with its default
// preferences (chacha20-poly1305 first), ends up with, as ssh reports it
// and as the server logs it.
func TestOpenSSHCipher(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		testenv.SkipOrFail(t, "OpenSSH client not installed: %v", err)
	}
	// Expected from the CPU's own description, not from the code under
	// test.
	defaultWant := ssh.CipherChaCha20Poly1305
	if runtime.GOARCH == "amd64" {
		info, err := os.ReadFile("/proc/cpuinfo")
		if err != nil {
			t.Fatal(err)
		}
		flags := map[string]bool{}
		for _, line := range strings.Split(string(info), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "flags" {
				for _, f := range strings.Fields(value) {
					flags[f] = true
				}
				break
			}
		}
		if flags["aes"] && flags["pclmulqdq"] {
			defaultWant = ssh.CipherAES128GCM
		}
	}
	tests := []struct {
		name    string
		ciphers []string
		want    string
	}{
		{"default", nil, defaultWant},
		{"empty is the default", []string{}, defaultWant},
		// The client's order decides: OpenSSH lists aes128-ctr before
		// the GCM ciphers.
		{"configured", []string{ssh.CipherAES256GCM, ssh.CipherAES128CTR}, ssh.CipherAES128CTR},
		{"configured aead", []string{ssh.CipherAES256GCM}, ssh.CipherAES256GCM},
		{"chacha20 for clients without AES-GCM", []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305}, ssh.CipherChaCha20Poly1305},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs lockedBuffer
			env := startServer(t, reverseHandler, func(s *Server) {
				s.Ciphers = tt.ciphers
				s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			key := writeKey(t, env.priv)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-p", env.port(t), "-i", key,
				"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "BatchMode=yes", "-o", "LogLevel=DEBUG1", "nix@127.0.0.1", "nix-daemon --stdio")
			cmd.Stdin = strings.NewReader("abc")
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("ssh: %v\n%s", err, errb.String())
			}
			if out.String() != "cba" {
				t.Errorf("stdout %q, want %q", out.String(), "cba")
			}
			want := "kex: server->client cipher: " + tt.want + " "
			if !strings.Contains(errb.String(), want) {
				t.Errorf("ssh's log lacks %q:\n%s", want, errb.String())
			}
			if want := "msg=authenticated "; !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), " cipher="+tt.want+"\n") {
				t.Errorf("server log does not name cipher %s:\n%s", tt.want, logs.String())
			}
		})
	}

	t.Run("client without the offered ciphers", func(t *testing.T) {
		var logs lockedBuffer
		env := startServer(t, reverseHandler, func(s *Server) {
			s.Ciphers = []string{ssh.CipherAES128GCM}
			s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		key := writeKey(t, env.priv)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-p", env.port(t), "-i", key,
			"-c", ssh.CipherChaCha20Poly1305,
			"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "BatchMode=yes", "nix@127.0.0.1", "nix-daemon --stdio")
		outb, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(outb), "no matching cipher found") {
			t.Errorf("ssh -c chacha20-poly1305: %v, %q; want no matching cipher", err, outb)
		}
	})
}

func TestParseCiphers(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"", nil, ""},
		{"aes128-gcm@openssh.com", []string{ssh.CipherAES128GCM}, ""},
		{"aes256-gcm@openssh.com, chacha20-poly1305@openssh.com,aes256-gcm@openssh.com", []string{ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}, ""},
		{"aes128-cbc", nil, `cipher "aes128-cbc" is not supported (supported: aes128-gcm@openssh.com, `},
		{"blowfish", nil, `cipher "blowfish" is not supported`},
	}
	for _, tt := range tests {
		got, err := ParseCiphers(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCiphers(%q) error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseCiphers(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a reader at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
