package sshserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
)

// workerMagic1 is the first word a Nix client sends on a worker-protocol
// connection.
const workerMagic1 = 0x6e697863

// TestNixClient checks that the exec command the installed Nix sends for an
// ssh-ng:// store, including its quoting of remote-store, is accepted and
// that the worker protocol's first bytes reach the handler. The handler
// then hangs up, so the Nix command itself fails.
func TestNixClient(t *testing.T) {
	nixBin, err := exec.LookPath("nix")
	if err != nil {
		testenv.SkipOrFail(t, "nix not installed: %v", err)
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		testenv.SkipOrFail(t, "OpenSSH client not installed: %v", err)
	}
	type hello struct {
		magic uint64
		err   error
	}
	got := make(chan hello, 1)
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		var buf [8]byte
		_, err := io.ReadFull(rw, buf[:])
		got <- hello{binary.LittleEndian.Uint64(buf[:]), err}
		return errors.New("test server: hanging up after the magic")
	}, nil)
	key := writeKey(t, env.priv)
	home := t.TempDir()

	for _, store := range []string{
		"ssh-ng://nix@127.0.0.1?ssh-key=" + key,
		"ssh-ng://nix@127.0.0.1?ssh-key=" + key + "&remote-store=/tmp/it's%20a%20store&remote-program=/nix/var/nix/profiles/default/bin/nix-daemon",
	} {
		t.Run(store[strings.IndexByte(store, '?'):], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, nixBin, "--extra-experimental-features", "nix-command", "store", "ping", "--store", store)
			cmd.Env = append(os.Environ(),
				"HOME="+home,
				"XDG_CACHE_HOME="+filepath.Join(home, "cache"),
				"NIX_SSHOPTS=-F /dev/null -p "+env.port(t)+" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
			)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err == nil {
				t.Fatalf("nix store ping succeeded against a server that hangs up: %s", out.String())
			}
			select {
			case h := <-got:
				if h.err != nil {
					t.Fatalf("reading the magic: %v", h.err)
				}
				if h.magic != workerMagic1 {
					t.Fatalf("first word %#x, want %#x", h.magic, workerMagic1)
				}
			default:
				t.Fatalf("handler never ran; nix said: %s", out.String())
			}
			// Nix leaves ssh's stderr attached, so the handler's error
			// reaches the user.
			if !strings.Contains(out.String(), "decross-store: test server: hanging up after the magic") {
				t.Errorf("handler error not shown to the Nix user; output: %s", out.String())
			}
		})
	}
}
