package httpcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/binarycache"
	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/store"
)

const (
	crossHello  = "/nix/store/c0000000000000000000000000000001-hello-aarch64-unknown-linux-gnu-2.12"
	nativeHello = "/nix/store/n0000000000000000000000000000001-hello-2.12"
	crossBig    = "/nix/store/c0000000000000000000000000000002-big-aarch64-unknown-linux-gnu-1.0"
	nativeBig   = "/nix/store/n0000000000000000000000000000002-big-1.0"
	bashX86     = "/nix/store/b0000000000000000000000000000004-bash-5.2"
	crossLeaky  = "/nix/store/c0000000000000000000000000000005-leaky-1.0"
	nativeLeaky = "/nix/store/n0000000000000000000000000000005-leaky-1.0"
	helloDrv    = "/nix/store/d0000000000000000000000000000001-hello-2.12.drv"
)

// upstream is an in-memory upstream store.
type upstream struct {
	infos map[string]*pathinfo.PathInfo
	nars  map[string][]byte
}

func (u *upstream) add(path string, nar []byte, refs ...string) {
	u.infos[path] = &pathinfo.PathInfo{Path: path, NarHash: sha256.Sum256(nar), NarSize: uint64(len(nar)), References: refs}
	u.nars[path] = nar
}

func (u *upstream) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	if i, ok := u.infos[p]; ok {
		return i.Clone(), nil
	}
	return nil, nil
}

func (u *upstream) NarFromPath(_ context.Context, p string) (io.ReadCloser, error) {
	b, ok := u.nars[p]
	if !ok {
		return nil, fmt.Errorf("path %s is not valid", p)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// fixture is a store over an in-memory upstream, served by a Handler on
// a real listener.
type fixture struct {
	url      string
	store    *store.Store
	cacheDir string
	pub      signature.PublicKey
	hooks    *recorder
}

type config func(*Config)

func newFixture(t *testing.T, bigSize int, opts ...config) *fixture {
	t.Helper()
	up := &upstream{infos: map[string]*pathinfo.PathInfo{}, nars: map[string][]byte{}}
	up.add(crossHello, nartest.Encode(nartest.Dir(
		nartest.E("bin", nartest.Dir(nartest.E("hello", nartest.Exe("\x7fELF\x00self="+crossHello+"/share\x00")))),
		nartest.E("share", nartest.Dir(nartest.E("msg", nartest.Reg(strings.Repeat("Hello, world!\n", 1000))))),
	)), crossHello)
	big := make([]byte, bigSize)
	rand.Read(big)
	up.add(crossBig, nartest.Encode(nartest.Reg(string(big))))
	up.add(bashX86, nartest.Encode(nartest.Reg("\x7fELF x86")))
	up.add(crossLeaky, nartest.Encode(nartest.Exe("#!"+bashX86+"/bin/sh\n")), bashX86)
	m, err := mapping.New([]mapping.Entry{
		{Native: nativeHello, Cross: crossHello, Deriver: helloDrv, Output: "out"},
		{Native: nativeBig, Cross: crossBig},
		{Native: nativeLeaky, Cross: crossLeaky},
	})
	if err != nil {
		t.Fatal(err)
	}
	sk, pk, err := signature.GenerateKeypair("http-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{cacheDir: t.TempDir(), pub: pk, hooks: &recorder{done: make(chan string, 100)}}
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.store, err = store.New(store.Config{Mapping: m, Upstream: up, Cache: c, SigningKey: &sk, NoReadAhead: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.store.Close)
	cfg := Config{Store: f.store, Priority: 40, Hooks: f.hooks}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	f.url = "http://" + l.Addr().String()
	return f
}

// recorder is Hooks that reports each request's op and reason.
type recorder struct {
	mu   sync.Mutex
	sent int64
	done chan string
}

func (r *recorder) Request(op, reason string) { r.done <- op + " " + reason }
func (r *recorder) NarSent(n int64) {
	r.mu.Lock()
	r.sent += n
	r.mu.Unlock()
}

func (f *fixture) client(t *testing.T) *binarycache.Cache {
	t.Helper()
	c, err := binarycache.Open(t.Context(), f.url+"/", binarycache.Options{TrustedKeys: []signature.PublicKey{f.pub}, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *fixture) entry(t *testing.T, c *narcache.Cache, path string) *narcache.Entry {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(f.cacheDir, path[11:43]+".json"))
	if err != nil {
		t.Fatal(err)
	}
	key := string(js[strings.Index(string(js), `"key": "`)+8:])
	key = key[:strings.IndexByte(key, '"')]
	e, err := c.Lookup(path, key)
	if err != nil || e == nil {
		t.Fatalf("lookup %s: %v, %v", path, e, err)
	}
	return e
}

func get(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestServesWhateverTheCacheHolds reads the cache with this project's
// binary-cache client, which checks signatures and NAR hashes: with the
// entry plain (compressed per request), compacted (sent as stored), and
// evicted; a NAR URL handed out before all of that keeps working.
func TestServesWhateverTheCacheHolds(t *testing.T) {
	f := newFixture(t, 1<<20)
	ctx := context.Background()
	want, err := f.store.QueryPathInfo(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := f.store.NarFromPath(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	wantNAR, _ := io.ReadAll(rc)
	rc.Close()
	resp, body := get(t, "GET", f.url+"/"+nativeHello[11:43]+".narinfo")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/x-nix-narinfo" {
		t.Fatalf("narinfo: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, line := range []string{
		"StorePath: " + nativeHello,
		"URL: " + narURL(nativeHello[11:43], want.NarHash),
		"Compression: zstd",
		"NarHash: " + want.NarHash.String(),
		fmt.Sprintf("NarSize: %d", want.NarSize),
		"References: " + nativeHello[11:],
		"Deriver: " + helloDrv[11:],
		"Sig: " + want.Sigs[0],
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("narinfo lacks %q:\n%s", line, body)
		}
	}
	if strings.Contains(string(body), "FileHash") || strings.Contains(string(body), "FileSize") {
		t.Errorf("narinfo claims the compressed file's hash or size:\n%s", body)
	}
	narURL := f.url + "/" + narURL(nativeHello[11:43], want.NarHash)

	other, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	steps := []struct {
		name       string
		before     func(t *testing.T)
		compressed bool
	}{
		{"plain", func(*testing.T) {}, false},
		{"compacted", func(t *testing.T) {
			if err := other.Compact(f.entry(t, other, nativeHello)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"evicted", func(t *testing.T) {
			if err := other.Remove(nativeHello); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			step.before(t)
			c := f.client(t)
			info, err := c.QueryPathInfo(ctx, nativeHello)
			if err != nil || info == nil {
				t.Fatalf("QueryPathInfo: %v, %v", info, err)
			}
			if info.NarHash != want.NarHash || info.NarSize != want.NarSize || fmt.Sprint(info.References) != fmt.Sprint(want.References) || info.Deriver != helloDrv {
				t.Errorf("path info over HTTP %+v, store says %+v", info, want)
			}
			rc, err := c.NarFromPath(ctx, nativeHello)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, wantNAR) {
				t.Fatalf("NAR over HTTP: %d bytes, %v; want the store's %d bytes", len(got), err, len(wantNAR))
			}
			resp, body := get(t, "GET", narURL)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-nix-nar" {
				t.Fatalf("NAR URL from the first narinfo: %s\n%s", resp.Status, body)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d for %d bytes", resp.ContentLength, len(body))
			}
			// Compacted, the stored file goes out; plain, a frame of raw blocks.
			if compressed := len(body) < len(wantNAR); compressed != step.compressed {
				t.Errorf("sent %d bytes for a NAR of %d: compressed %v, want %v", len(body), len(wantNAR), compressed, step.compressed)
			}
			zr, err := zstd.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer zr.Close()
			if nar, err := io.ReadAll(zr); err != nil || !bytes.Equal(nar, wantNAR) {
				t.Fatalf("decompressed NAR: %d bytes, %v", len(nar), err)
			}
			head, hbody := get(t, "HEAD", narURL)
			if head.StatusCode != 200 || len(hbody) != 0 || head.ContentLength != resp.ContentLength {
				t.Errorf("HEAD: %s, %d bytes of body, Content-Length %d (GET said %d)", head.Status, len(hbody), head.ContentLength, resp.ContentLength)
			}
		})
	}
}

// TestRequests: every answer that is not a path, and every path that is
// not served, with its status and the reason in the body.
func TestRequests(t *testing.T) {
	f := newFixture(t, 1<<10)
	hello, err := f.store.QueryPathInfo(context.Background(), nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	var other pathinfo.NarHash
	other[0] = 1
	tests := []struct {
		name, method, path string
		status             int
		body               string // contained in the body
		header             string // "Name: value"
	}{
		{"cache-info", "GET", "/nix-cache-info", 200, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n", ""},
		{"cache-info-head", "HEAD", "/nix-cache-info", 200, "", "Content-Length: 51"},
		{"narinfo-head", "HEAD", "/" + nativeHello[11:43] + ".narinfo", 200, "", "Content-Type: text/x-nix-narinfo"},
		{"unknown-hash", "GET", "/" + strings.Repeat("1", 32) + ".narinfo", 404, "no path with hash part 1111", ""},
		{"cross-path", "GET", "/" + crossHello[11:43] + ".narinfo", 404, "no path with hash part", ""},
		{"leaky", "GET", "/" + nativeLeaky[11:43] + ".narinfo", 404, "is not valid in this store: cannot serve it from " + crossLeaky, ""},
		{"leaky-nar", "GET", "/" + narURL(nativeLeaky[11:43], other), 404, "not in the mapping", ""},
		{"changed-nar", "GET", "/" + narURL(nativeHello[11:43], other), 404, "has changed since this URL was given out: its NAR hash is now " + hello.NarHash.String(), ""},
		{"malformed-narinfo", "GET", "/hello.narinfo", 400, "malformed narinfo name", ""},
		{"malformed-nar", "GET", "/nar/" + nativeHello[11:43] + ".nar.zst", 400, "malformed NAR name", ""},
		{"other-compression", "GET", "/nar/" + nativeHello[11:43] + "-" + strings.Repeat("0", 52) + ".nar.xz", 400, "malformed NAR name", ""},
		{"root", "GET", "/", 404, "no such file", ""},
		{"listing", "GET", "/nar/", 400, "malformed NAR name", ""},
		{"traversal", "GET", "/../../etc/passwd", 404, "no such file", ""},
		{"encoded-traversal", "GET", "/nar/%2e%2e/%2e%2e/etc/passwd", 400, "malformed NAR name", ""},
		{"ls", "GET", "/" + nativeHello[11:43] + ".ls", 404, "no such file", ""},
		{"put", "PUT", "/" + nativeHello[11:43] + ".narinfo", 405, "only GET and HEAD", "Allow: GET, HEAD"},
		{"post", "POST", "/nix-cache-info", 405, "only GET and HEAD", "Allow: GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, tt.method, f.url+tt.path)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
				t.Errorf("%s %s: %s\n%s\nwant %d and %q", tt.method, tt.path, resp.Status, body, tt.status, tt.body)
			}
			if tt.header != "" {
				name, value, _ := strings.Cut(tt.header, ": ")
				if got := resp.Header.Get(name); got != value {
					t.Errorf("%s: %q, want %q", name, got, value)
				}
			}
		})
	}
}

// TestStalledClientIsCut: a client that stops reading a NAR holds its
// connection for StallTimeout at most, then the transfer fails.
func TestStalledClientIsCut(t *testing.T) {
	f := newFixture(t, 64<<20, func(c *Config) { c.StallTimeout = 200 * time.Millisecond })
	info, err := f.store.QueryPathInfo(context.Background(), nativeBig)
	if err != nil {
		t.Fatal(err)
	}
	for len(f.hooks.done) > 0 {
		<-f.hooks.done
	}
	conn, err := net.Dial("tcp", f.url[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive buffer, so that the server's writes block soon.
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", narURL(nativeBig[11:43], info.NarHash))
	select {
	case got := <-f.hooks.done:
		if got != "nar "+ReasonIO {
			t.Fatalf("request ended with %q, want a failed transfer", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a client that reads nothing held its transfer for 30 s")
	}
	f.hooks.mu.Lock()
	sent := f.hooks.sent
	f.hooks.mu.Unlock()
	if sent <= 0 || sent >= int64(info.NarSize) {
		t.Errorf("sent %d bytes of %d before giving up", sent, info.NarSize)
	}
}

// TestConcurrentClients: many clients at once, some asking for the same
// cold path, get the same NAR.
func TestConcurrentClients(t *testing.T) {
	f := newFixture(t, 4<<20)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			p := []string{nativeHello, nativeBig}[i%2]
			c, err := binarycache.Open(t.Context(), f.url+"/", binarycache.Options{TrustedKeys: []signature.PublicKey{f.pub}, Attempts: 1})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			rc, err := c.NarFromPath(ctx, p)
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			// The client checks NarHash and NarSize as it reads.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
