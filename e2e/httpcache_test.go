package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
)

// TestHTTPBinaryCache serves the example over the HTTP door alone
// (--listen none) from a binary-cache upstream, in a mount namespace where
// /nix/store and the daemon socket directory are empty tmpfs: the server
// needs neither. The real nix CLI, outside, uses it as a binary cache
// trusting only the server's key.
func TestHTTPBinaryCache(t *testing.T) {
	RequireNix(t)
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "the HTTP e2e test mounts tmpfs over /nix/store in a private namespace, which needs root")
	}
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, m := servableMapping(t, ex, work)
	ctx := testContext(t, 5*time.Minute)
	main, hello, leaky := ex.Get(t, Main), ex.Get(t, "hello"), ex.Get(t, "leaky")
	nix := func(name string, args ...string) string {
		t.Helper()
		out, err := nixCommand(ctx, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// The upstream: a binary cache of the cross closure, signed by a key
	// the server trusts.
	upstreamDir := filepath.Join(work, "upstream")
	nix("nix-store", "--generate-binary-cache-key", "e2e-upstream-1", filepath.Join(work, "up.sk"), filepath.Join(work, "up.pk"))
	nix("nix", "copy", "--to", "file://"+upstreamDir+"?compression=zstd", main.Cross)
	nix("nix", "store", "sign", "--store", "file://"+upstreamDir, "--key-file", filepath.Join(work, "up.sk"), "-r", main.Cross)
	upKey, err := os.ReadFile(filepath.Join(work, "up.pk"))
	if err != nil {
		t.Fatal(err)
	}

	bin := serverBinary(t)
	run(t, bin, "keygen", "--name", "decross-http-e2e-1", "--secret-key-file", filepath.Join(work, "secret.key"), "--public-key-file", filepath.Join(work, "public.key"))
	pub, err := os.ReadFile(filepath.Join(work, "public.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &server{publicKey: string(pub)}
	// Empty tmpfs over the store and the daemon socket directory, checked
	// empty, then the server; the binary lives outside /nix/store.
	const script = `mount -t tmpfs tmpfs /nix/store && mount -t tmpfs tmpfs /nix/var/nix/daemon-socket &&
[ -z "$(ls -A /nix/store)" ] && [ -z "$(ls -A /nix/var/nix/daemon-socket)" ] && exec "$0" "$@"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, bin, "serve",
		"--listen", "none", "--http", "127.0.0.1:0",
		"--mapping", mappingFile,
		"--signing-key", filepath.Join(work, "secret.key"),
		"--upstream", "file://"+upstreamDir,
		"--trusted-public-key", strings.TrimSpace(string(upKey)),
		"--cache-dir", filepath.Join(work, "cache"))
	cmd.Env = NixEnv()
	addr, logs, exited := startLogged(t, cmd, regexp.MustCompile(`msg=serving .*http=(\S+)`))
	url := "http://" + addr

	t.Run("path-info", func(t *testing.T) {
		out, _, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, "-r", "--json", main.Native)
		if err != nil {
			t.Fatal(err)
		}
		infos := pathInfoJSON(t, out)
		if want := len(Closure(t, main.Cross)); len(infos) != want {
			t.Errorf("%d paths in the closure over HTTP, the cross closure has %d", len(infos), want)
		}
		for _, info := range infos {
			if !strings.Contains(strings.Join(info.Signatures, " "), "decross-http-e2e-1:") {
				t.Errorf("%s is not signed by the server: %v", info.Path, info.Signatures)
			}
			if e, ok := m.ByCross(info.Path); ok {
				t.Errorf("cross path %s (of %s) served", info.Path, e.Native)
			}
		}
	})

	dest := filepath.Join(work, "client-store")
	t.Cleanup(func() { makeWritable(t, dest) })
	t.Run("copy-verify-run", func(t *testing.T) {
		if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, main.Native); err != nil {
			t.Fatal(err)
		}
		for _, store := range []string{dest, url} {
			if _, _, err := srv.nix(ctx, "", "nix", "store", "verify", "--store", store, "-r", main.Native); err != nil {
				t.Fatal(err)
			}
		}
		storeDir := filepath.Join(dest, "nix", "store")
		for _, prog := range []struct{ key, bin string }{{"hello", "bin/hello"}, {"hello-compat", "bin/hello-compat"}} {
			got, err := RunInStore(t, storeDir, filepath.Join(ex.Get(t, prog.key).Native, prog.bin))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, prog.key+".stdout", got)
		}
		assertNoCrossHashes(t, storeDir, crossHashes(m))
	})

	t.Run("substitute", func(t *testing.T) {
		dest2 := filepath.Join(work, "substituted")
		t.Cleanup(func() { makeWritable(t, dest2) })
		_, stderr, err := srv.nix(ctx, "substituters = "+url+"\nrequire-sigs = true", "nix-store", "--store", dest2, "--realise", main.Native)
		if err != nil {
			t.Fatal(err)
		}
		if want := "copying path '" + hello.Native + "' from '" + url + "'"; !strings.Contains(stderr, want) {
			t.Errorf("stderr does not show %q:\n%s", want, stderr)
		}
		got, err := RunInStore(t, filepath.Join(dest2, "nix", "store"), filepath.Join(hello.Native, "bin", "hello"))
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, "hello.stdout", got)
	})

	t.Run("not-served", func(t *testing.T) {
		for _, tt := range []struct{ path, reason string }{
			{leaky.Native, leaky.Cross + " is not valid in the upstream store"},
			{hello.Cross, "no path with hash part"},
			{"/nix/store/00000000000000000000000000000000-none", "no path with hash part"},
		} {
			resp, err := http.Get(url + "/" + tt.path[11:43] + ".narinfo")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), tt.reason) {
				t.Errorf("narinfo of %s: %s %q; want 404 with %q", tt.path, resp.Status, body, tt.reason)
			}
		}
		if !strings.Contains(logs(), "http: not served") {
			t.Errorf("the log does not say why the leaky path is not served:\n%s", logs())
		}
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("server exited with %v after SIGTERM\n%s", err, logs())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("server did not exit after SIGTERM")
	}
}

// TestBothDoors: one process serves SSH and HTTP from one cache and one
// upstream, with the same path info on both.
func TestBothDoors(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	srv := startServer(t, mappingFile, "--http", "127.0.0.1:0")
	match := regexp.MustCompile(`msg=serving .*http=(\S+)`).FindStringSubmatch(srv.logs())
	if match == nil {
		t.Fatalf("no HTTP address in the log:\n%s", srv.logs())
	}
	ctx := testContext(t, 2*time.Minute)
	hello := ex.Get(t, "hello")
	var infos [2][]jsonPathInfo
	for i, url := range []string{srv.url(srv.clientKey), "http://" + match[1]} {
		out, _, err := srv.nix(ctx, "", "nix", "path-info", "--json", "--store", url, hello.Native)
		if err != nil {
			t.Fatal(err)
		}
		infos[i] = pathInfoJSON(t, out)
	}
	ssh, web := infos[0][0], infos[1][0]
	if ssh.NarHash != web.NarHash || ssh.NarSize != web.NarSize || fmt.Sprint(ssh.References) != fmt.Sprint(web.References) || ssh.Deriver != web.Deriver {
		t.Errorf("path info over SSH %+v, over HTTP %+v", ssh, web)
	}
	if n := strings.Count(srv.logs(), "msg=\"rewrote path\" path="+hello.Native+" "); n != 1 {
		t.Errorf("hello rewritten %d times, want once for both doors", n)
	}
}

// startLogged starts cmd, collecting its stderr, and returns the first
// submatch of ready in it once it appears; a cleanup kills the process.
func startLogged(t *testing.T, cmd *exec.Cmd, ready *regexp.Regexp) (string, func() string, <-chan error) {
	t.Helper()
	var mu sync.Mutex
	var log bytes.Buffer
	logs := func() string {
		mu.Lock()
		defer mu.Unlock()
		return log.String()
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not exit after SIGKILL", cmd.Path)
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", cmd.Path, logs())
		}
	})
	select {
	case addr := <-found:
		return addr, logs, exited
	case err := <-exited:
		t.Fatalf("%s exited before it was ready: %v\n%s", cmd.Path, err, logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not ready after 30 s\n%s", cmd.Path, logs())
	}
	return "", nil, nil
}
