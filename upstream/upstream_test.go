package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/internal/testenv"
	"github.com/decross-store/decross-store/pathinfo"
)

func TestOpen(t *testing.T) {
	tests := []struct {
		addr, env, want string
		bad             bool
	}{
		{addr: "daemon", want: DefaultSocket},
		{addr: "daemon", env: "/run/nix.sock", want: "/run/nix.sock"},
		{addr: "unix://", want: DefaultSocket},
		{addr: "unix:///tmp/x/socket", env: "/ignored", want: "/tmp/x/socket"},
		{addr: "unix://relative/socket", bad: true},
		{addr: "unix:///tmp/s?trusted=1", bad: true},
		{addr: "ssh-ng://host", bad: true},
		{addr: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr+" "+tt.env, func(t *testing.T) {
			t.Setenv("NIX_DAEMON_SOCKET_PATH", tt.env)
			d, err := Open(tt.addr)
			if tt.bad {
				if err == nil {
					t.Fatalf("Open(%q) accepted it", tt.addr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Socket() != tt.want {
				t.Errorf("socket %q, want %q", d.Socket(), tt.want)
			}
		})
	}
}

// mapStore serves a few paths for the in-process daemon.
type mapStore map[string][]byte // path → NAR

func (m mapStore) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	if p == failingPath {
		return nil, errors.New("injected failure")
	}
	nar, ok := m[p]
	if !ok {
		return nil, nil
	}
	return &pathinfo.PathInfo{Path: p, NarHash: sha256.Sum256(nar), NarSize: uint64(len(nar))}, nil
}

func (m mapStore) QueryPathFromHashPart(_ context.Context, h string) (string, error) {
	for p := range m {
		if strings.HasPrefix(p, "/nix/store/"+h+"-") {
			return p, nil
		}
	}
	return "", nil
}

func (m mapStore) NarFromPath(_ context.Context, p string) (io.ReadCloser, error) {
	nar, ok := m[p]
	if !ok {
		return nil, fmt.Errorf("path '%s' is not valid", p)
	}
	return io.NopCloser(bytes.NewReader(nar)), nil
}

func (m mapStore) ValidPaths(context.Context) ([]string, error) { return nil, nil }

const (
	servedPath  = "/nix/store/433id1qnb29zpay0665622fzcbqy07zp-greeting.txt"
	missingPath = "/nix/store/00000000000000000000000000000000-nope"
	failingPath = "/nix/store/11111111111111111111111111111111-fails"
)

// fakeNAR is a well-formed NAR of a one-line file.
var fakeNAR = func() []byte {
	var b bytes.Buffer
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents", "hello wire\n", ")"} {
		var n [8]byte
		n[0] = byte(len(s))
		b.Write(n[:])
		b.WriteString(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	return b.Bytes()
}()

// serveSocket runs a daemonproto.Server on a temporary unix socket and
// counts the connections it accepts.
func serveSocket(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	srv := &daemonproto.Server{Store: mapStore{servedPath: fakeNAR}}
	var wg sync.WaitGroup
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = srv.ServeConn(context.Background(), conn)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return sock, &accepted
}

// openServed opens a pool on a serveSocket daemon, closed with the test.
func openServed(t *testing.T) (*Daemon, *atomic.Int64) {
	t.Helper()
	sock, accepted := serveSocket(t)
	d, err := Open("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, accepted
}

func TestPoolReusesConnections(t *testing.T) {
	d, accepted := openServed(t)
	ctx := t.Context()
	for i := 0; i < 10; i++ {
		info, err := d.QueryPathInfo(ctx, servedPath)
		if err != nil || info == nil || info.NarSize != uint64(len(fakeNAR)) {
			t.Fatalf("QueryPathInfo = %+v, %v", info, err)
		}
		if info, err := d.QueryPathInfo(ctx, missingPath); info != nil || err != nil {
			t.Fatalf("QueryPathInfo(missing) = %+v, %v", info, err)
		}
		if p, err := d.QueryPathFromHashPart(ctx, "433id1qnb29zpay0665622fzcbqy07zp"); p != servedPath || err != nil {
			t.Fatalf("QueryPathFromHashPart = %q, %v", p, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("30 sequential queries used %d connections, want 1", n)
	}

	// A NAR read to its end and verified by the caller gives its
	// connection back to the pool.
	for range 3 {
		rc, err := d.NarFromPath(ctx, servedPath)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, fakeNAR) {
			t.Errorf("NAR %q, %v", got, err)
		}
		rc.(Verifier).Verified()
		rc.Close()
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("connections after three whole verified NARs: %d, want 1", n)
	}
	// Unverified (the bytes may not have been the whole NAR, if the
	// daemon's narSize is wrong), the connection is dropped.
	rc, err := d.NarFromPath(ctx, servedPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := d.QueryPathInfo(ctx, servedPath); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("connections after an unverified NAR and a query: %d, want 2", n)
	}
	// A NAR closed early, or of a missing path, leaves its connection out
	// of sync: it is dropped.
	rc, err = d.NarFromPath(ctx, servedPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := d.NarFromPath(ctx, missingPath); err == nil {
		t.Error("NarFromPath(missing) succeeded")
	}
	if _, err := d.QueryPathInfo(ctx, servedPath); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 4 {
		t.Errorf("connections after a NAR closed early, a missing NAR and a query: %d, want 4", n)
	}
}

// TestFailedConnectionNotReused: after an error the connection is
// dropped, not returned to the pool, so the next query opens a new one.
func TestFailedConnectionNotReused(t *testing.T) {
	d, accepted := openServed(t)
	ctx := t.Context()
	if _, err := d.QueryPathInfo(ctx, servedPath); err != nil {
		t.Fatal(err)
	}
	if _, err := d.QueryPathInfo(ctx, failingPath); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("QueryPathInfo(failing) = %v, want the daemon's error", err)
	}
	if _, err := d.QueryPathInfo(ctx, servedPath); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("connections: %d, want 2 (the failed one replaced)", n)
	}
}

func TestConcurrent(t *testing.T) {
	sock, accepted := serveSocket(t)
	d, err := Open("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				info, err := d.QueryPathInfo(t.Context(), servedPath)
				if err != nil || info == nil {
					errs <- fmt.Errorf("QueryPathInfo = %v, %v", info, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := accepted.Load(); n > workers*each/4 {
		t.Errorf("%d queries opened %d connections", workers*each, n)
	}
	d.mu.Lock()
	idle := len(d.idle)
	d.mu.Unlock()
	if idle > maxIdle {
		t.Errorf("%d idle connections kept, at most %d wanted", idle, maxIdle)
	}
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	if _, err := d.QueryPathInfo(t.Context(), servedPath); err == nil {
		t.Error("query after Close succeeded")
	}
}

func TestDialFailure(t *testing.T) {
	d, err := Open("unix://" + filepath.Join(t.TempDir(), "absent"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.QueryPathInfo(t.Context(), servedPath); err == nil {
		t.Error("query without a daemon succeeded")
	}
}

// startNixDaemon runs a nix-daemon of our own on a temporary socket, so
// the test does not depend on how the machine's daemon is configured.
func startNixDaemon(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("nix-daemon"); err != nil {
		testenv.SkipOrFail(t, "nix not installed: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "daemon.sock")
	cmd := exec.Command("nix-daemon")
	for _, kv := range os.Environ() {
		// A daemon whose own store is "daemon" would connect to itself.
		if !strings.HasPrefix(kv, "NIX_REMOTE=") && !strings.HasPrefix(kv, "NIX_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "NIX_DAEMON_SOCKET_PATH="+sock, "NIX_CONFIG=experimental-features = nix-command")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
	}
	t.Fatalf("nix-daemon did not create %s", sock)
	return ""
}

func runNix(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command", "NIX_REMOTE=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return string(out)
}

// TestRealDaemon reads from a real Nix 2.8 daemon through its socket and
// compares with what the nix commands report.
func TestRealDaemon(t *testing.T) {
	sock := startNixDaemon(t)
	t.Setenv("NIX_DAEMON_SOCKET_PATH", sock)
	checkAgainstNix(t, "daemon")
}

func checkAgainstNix(t *testing.T, addr string) {
	d, err := Open(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f := filepath.Join(t.TempDir(), "decross-upstream.txt")
	if err := os.WriteFile(f, []byte("read through the daemon socket\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := strings.TrimSpace(runNix(t, "nix-store", "--add", f))
	var infos []struct {
		NarHash string `json:"narHash"`
		NarSize uint64 `json:"narSize"`
		CA      string `json:"ca"`
	}
	if err := json.Unmarshal([]byte(runNix(t, "nix", "path-info", "--json", p)), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("nix path-info: %v", err)
	}
	dump := runNix(t, "nix-store", "--dump", p)

	info, err := d.QueryPathInfo(t.Context(), p)
	if err != nil || info == nil {
		t.Fatalf("QueryPathInfo = %v, %v", info, err)
	}
	gotHash := "sha256-" + base64.StdEncoding.EncodeToString(info.NarHash[:])
	if gotHash != infos[0].NarHash || info.NarSize != infos[0].NarSize || info.CA != infos[0].CA {
		t.Errorf("QueryPathInfo = %+v, nix path-info says %+v", info, infos[0])
	}
	if info, err := d.QueryPathInfo(t.Context(), missingPath); info != nil || err != nil {
		t.Errorf("QueryPathInfo(missing) = %v, %v", info, err)
	}
	if got, err := d.QueryPathFromHashPart(t.Context(), p[len("/nix/store/"):][:32]); got != p || err != nil {
		t.Errorf("QueryPathFromHashPart = %q, %v", got, err)
	}
	rc, err := d.NarFromPath(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, len(dump))
	if _, err := io.ReadFull(rc, got); err != nil || string(got) != dump {
		t.Errorf("NarFromPath differs from nix-store --dump (%v)", err)
	}
}

// A burst of requests opens at most maxDials connections at once: each
// connection here is held before its handshake until another one arrives
// (or a bound passes), so more concurrent dials would show as overlap.
func TestDialsAreBounded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &daemonproto.Server{Store: mapStore{servedPath: fakeNAR}}
	var mu sync.Mutex
	handshaking, most := 0, 0
	more := make(chan struct{}) // closed and replaced when handshaking grows
	var wg sync.WaitGroup
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			handshaking++
			most = max(most, handshaking)
			close(more)
			more = make(chan struct{})
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				deadline := time.After(200 * time.Millisecond)
				for {
					mu.Lock()
					n, grew := handshaking, more
					mu.Unlock()
					if n > maxDials {
						break // the bound is broken: no need to wait
					}
					select {
					case <-grew:
						continue
					case <-deadline:
					}
					break
				}
				mu.Lock()
				handshaking--
				mu.Unlock()
				_ = srv.ServeConn(context.Background(), conn)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	d, err := Open("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var calls sync.WaitGroup
	for range 8 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			if _, err := d.QueryPathInfo(t.Context(), servedPath); err != nil {
				t.Error(err)
			}
		}()
	}
	calls.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most > maxDials {
		t.Errorf("%d connections in their handshake at once, want at most %d", most, maxDials)
	}
}
