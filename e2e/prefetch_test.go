package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
)

// TestPrefetch warms a cache with `prefetch`, then checks that a fresh
// server answers from it without rewriting anything, and that a mapping
// with an unservable path makes prefetch fail and name it.
func TestPrefetch(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	withLeak, m := servableMapping(t, ex, work)
	leaky := ex.Get(t, "leaky")
	clean := filepath.Join(work, "clean.json")
	writeMapping(t, clean, without(m, leaky.Native))
	cache := filepath.Join(work, "cache")
	ctx := testContext(t, 5*time.Minute)

	t.Run("warm", func(t *testing.T) {
		stdout, stderr, err := runTool(t, "prefetch", "--mapping", clean, "--cache-dir", cache, "--jobs", "2")
		if err != nil {
			t.Fatalf("prefetch: %v\n%s%s", err, stdout, stderr)
		}
		// Not a terminal: one summary line, no bar.
		if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "prefetched ") ||
			!strings.Contains(lines[0], "; 0 failed; 0 mapped paths cannot be served") {
			t.Errorf("stdout %q, want one summary line with no problem", stdout)
		}
		if stderr != "" {
			t.Errorf("stderr %q, want nothing (no bar when stderr is not a terminal, warnings only)", stderr)
		}
		t.Log(strings.TrimSpace(stdout))
	})

	t.Run("serve-warm", func(t *testing.T) {
		main := ex.Get(t, Main)
		srv := startServer(t, clean, "--cache-dir", cache)
		url := srv.url(srv.clientKey)
		out, _, err := srv.nix(ctx, "", "nix", "path-info", "-r", "--store", url, main.Native)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(strings.Fields(out)), len(Closure(t, main.Cross)); got != want {
			t.Errorf("path-info -r listed %d paths, want %d (the cross closure's size):\n%s", got, want, out)
		}
		dest := filepath.Join(work, "dest")
		t.Cleanup(func() { makeWritable(t, dest) })
		if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, main.Native); err != nil {
			t.Fatal(err)
		}
		if _, _, err := srv.nix(ctx, "", "nix", "store", "verify", "--store", dest, "-r", main.Native); err != nil {
			t.Fatal(err)
		}
		// Stop the server so that every line it logged has been read.
		if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-srv.exited:
			if err != nil {
				t.Fatalf("server exited with %v after SIGTERM", err)
			}
		case <-ctx.Done():
			t.Fatal("server did not exit after SIGTERM")
		}
		if logs := srv.logs(); strings.Contains(logs, "rewrote path") {
			t.Errorf("the server rewrote paths that prefetch had prepared:\n%s", logs)
		}
	})

	t.Run("unservable", func(t *testing.T) {
		stdout, stderr, err := runTool(t, "prefetch", "--mapping", withLeak, "--cache-dir", cache)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("prefetch of a mapping with a leak: %v, want exit status 1\n%s%s", err, stdout, stderr)
		}
		if !strings.Contains(stdout, "; 1 mapped path cannot be served") || !strings.Contains(stdout, "cannot be served: path '"+leaky.Native+"'") {
			t.Errorf("stdout does not name %s as unservable:\n%s", leaky.Native, stdout)
		}
		if !strings.Contains(stderr, "decross-store prefetch: 1 mapped path cannot be served") {
			t.Errorf("stderr %q, want the reason for the exit status", stderr)
		}
	})

	// On a terminal, a progress bar on stderr (script(1) provides the pty).
	t.Run("terminal", func(t *testing.T) {
		bin := serverBinary(t)
		cmdline := strings.Join([]string{bin, "prefetch", "--mapping", clean, "--cache-dir", cache}, " ")
		cmd := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null")
		cmd.Env = NixEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("prefetch under script: %v\n%s", err, out)
		}
		// The bar shows paths done out of the total: "(0/10)".
		if !regexp.MustCompile(`\rprefetch .*\(\d+/\d+\)`).Match(out) {
			t.Errorf("no progress bar in the terminal output %q", out)
		}
		if !strings.Contains(string(out), "prefetched ") {
			t.Errorf("no summary line in the terminal output %q", out)
		}
	})
}

func writeMapping(t *testing.T, path string, entries []mapping.Entry) {
	t.Helper()
	m, err := mapping.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
