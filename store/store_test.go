package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/rewrite"
	"github.com/decross-store/decross-store/upstream"
)

const (
	crossHello  = "/nix/store/c0000000000000000000000000000001-hello-aarch64-unknown-linux-gnu-2.12"
	nativeHello = "/nix/store/n0000000000000000000000000000001-hello-2.12"
	crossGlibc  = "/nix/store/c0000000000000000000000000000002-glibc-aarch64-unknown-linux-gnu-2.36"
	nativeGlibc = "/nix/store/n0000000000000000000000000000002-glibc-2.36"
	srcPath     = "/nix/store/s0000000000000000000000000000003-hello.c"
	bashX86     = "/nix/store/b0000000000000000000000000000004-bash-5.2"
	crossLeaky  = "/nix/store/c0000000000000000000000000000005-leaky-1.0"
	nativeLeaky = "/nix/store/n0000000000000000000000000000005-leaky-1.0"
)

type file struct {
	path, contents, target string
	exec                   bool
}

// makeNAR serialises a tree; files must be in NAR order.
func makeNAR(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := nar.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		h := &nar.Header{Path: f.path}
		switch {
		case f.target != "":
			h.Type, h.LinkTarget = nar.TypeSymlink, f.target
		case f.contents == "" && strings.HasSuffix(f.path, "/") || f.path == "/" && f.contents == "":
			h.Type = nar.TypeDirectory
			h.Path = strings.TrimSuffix(f.path, "/")
			if h.Path == "" {
				h.Path = "/"
			}
		default:
			h.Type, h.Size, h.Executable = nar.TypeRegular, int64(len(f.contents)), f.exec
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Type == nar.TypeRegular {
			io.WriteString(w, f.contents)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type fakeUpstream struct {
	mu       sync.Mutex
	infos    map[string]*pathinfo.PathInfo
	nars     map[string][]byte
	narReads atomic.Int64
	delay    time.Duration
}

func (u *fakeUpstream) add(path, ca string, narBytes []byte, refs ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	sort.Strings(refs)
	u.infos[path] = &pathinfo.PathInfo{Path: path, NarHash: sha256.Sum256(narBytes), NarSize: uint64(len(narBytes)), References: refs, CA: ca}
	u.nars[path] = narBytes
}

func (u *fakeUpstream) QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if i, ok := u.infos[p]; ok {
		return i.Clone(), nil
	}
	return nil, nil
}

func (u *fakeUpstream) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	u.narReads.Add(1)
	time.Sleep(u.delay)
	u.mu.Lock()
	defer u.mu.Unlock()
	b, ok := u.nars[p]
	if !ok {
		return nil, fmt.Errorf("path %s is not valid", p)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

type fixture struct {
	up       *fakeUpstream
	key      signature.SecretKey
	pub      signature.PublicKey
	cacheDir string
	mapping  *mapping.Mapping
}

func newFixture(t testing.TB) *fixture {
	up := &fakeUpstream{infos: map[string]*pathinfo.PathInfo{}, nars: map[string][]byte{}}
	up.add(srcPath, "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", makeNAR(t, file{path: "/", contents: "int main(){}\n"}))
	up.add(crossGlibc, "", makeNAR(t,
		file{path: "/"},
		file{path: "/lib/"},
		file{path: "/lib/ld-linux-aarch64.so.1", contents: "\x7fELF\x00 I am " + crossGlibc + "/lib/ld-linux-aarch64.so.1\x00", exec: true},
	), crossGlibc)
	up.add(crossHello, "", makeNAR(t,
		file{path: "/"},
		file{path: "/bin/"},
		file{path: "/bin/hello", contents: "\x7fELF\x00interp=" + crossGlibc + "/lib/ld-linux-aarch64.so.1\x00self=" + crossHello + "/share\x00", exec: true},
		file{path: "/bin/hi", target: crossHello + "/bin/hello"},
		file{path: "/share/"},
		file{path: "/share/src", contents: "built from " + srcPath + "\n"},
	), crossHello, crossGlibc, srcPath)
	up.add(bashX86, "", makeNAR(t, file{path: "/", contents: "\x7fELF x86"}))
	up.add(crossLeaky, "", makeNAR(t, file{path: "/", contents: "#!" + bashX86 + "/bin/sh\n", exec: true}), bashX86)

	sk, pk, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New([]mapping.Entry{
		{Native: nativeHello, Cross: crossHello, Deriver: "/nix/store/d0000000000000000000000000000001-hello-2.12.drv", Output: "out"},
		{Native: nativeGlibc, Cross: crossGlibc},
		{Native: nativeLeaky, Cross: crossLeaky},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{up: up, key: sk, pub: pk, cacheDir: t.TempDir(), mapping: m}
}

func (f *fixture) store(t *testing.T) *Store {
	t.Helper()
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: f.up, Cache: c, SigningKey: &f.key, Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func readNAR(t *testing.T, s *Store, p string) []byte {
	t.Helper()
	rc, err := s.NarFromPath(context.Background(), p)
	if err != nil {
		t.Fatalf("NarFromPath(%s): %v", p, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pad(native, cross string) string {
	return "/nix/store/" + strings.Repeat("/", len(cross)-len(native)) + native[len("/nix/store/"):]
}

func TestServesRewrittenNativePath(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	ctx := context.Background()

	info, err := s.QueryPathInfo(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	want := makeNAR(t,
		file{path: "/"},
		file{path: "/bin/"},
		file{path: "/bin/hello", contents: "\x7fELF\x00interp=" + pad(nativeGlibc, crossGlibc) + "/lib/ld-linux-aarch64.so.1\x00self=" + pad(nativeHello, crossHello) + "/share\x00", exec: true},
		file{path: "/bin/hi", target: nativeHello + "/bin/hello"},
		file{path: "/share/"},
		file{path: "/share/src", contents: "built from " + srcPath + "\n"},
	)
	if got := readNAR(t, s, nativeHello); !bytes.Equal(got, want) {
		t.Fatalf("NAR =\n%q\nwant\n%q", got, want)
	}
	if info.NarHash != sha256.Sum256(want) || info.NarSize != uint64(len(want)) {
		t.Errorf("narHash/narSize = %s/%d, want those of the rewritten NAR", info.NarHash, info.NarSize)
	}
	wantRefs := []string{nativeHello, nativeGlibc, srcPath}
	sort.Strings(wantRefs)
	if fmt.Sprint(info.References) != fmt.Sprint(wantRefs) {
		t.Errorf("references = %v, want %v", info.References, wantRefs)
	}
	if info.Deriver != "/nix/store/d0000000000000000000000000000001-hello-2.12.drv" || info.CA != "" || info.Ultimate || info.RegistrationTime != 1700000000 {
		t.Errorf("info = %+v", info)
	}
	if len(info.Sigs) != 1 {
		t.Fatalf("sigs = %v, want one", info.Sigs)
	}
	sig, err := signature.ParseSignature(info.Sigs[0])
	if err != nil || !f.pub.Verify(info.Fingerprint(), sig) {
		t.Fatalf("signature %q does not verify (%v)", info.Sigs[0], err)
	}

	// The cross path itself is hidden; unknown paths are not valid.
	for _, p := range []string{crossHello, "/nix/store/z0000000000000000000000000000009-nope"} {
		if info, err := s.QueryPathInfo(ctx, p); info != nil || err != nil {
			t.Errorf("QueryPathInfo(%s) = %v, %v; want not valid", p, info, err)
		}
	}
}

func TestServesContentAddressedPathUnchanged(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	info, err := s.QueryPathInfo(context.Background(), srcPath)
	if err != nil || info == nil {
		t.Fatalf("QueryPathInfo(source) = %v, %v", info, err)
	}
	if info.CA == "" || info.NarHash != f.up.infos[srcPath].NarHash {
		t.Errorf("CA path info = %+v", info)
	}
	if got := readNAR(t, s, srcPath); !bytes.Equal(got, f.up.nars[srcPath]) {
		t.Error("CA path NAR changed")
	}
	if p, _ := s.QueryPathFromHashPart(context.Background(), hashPart(srcPath)); p != srcPath {
		t.Errorf("QueryPathFromHashPart(source) = %q", p)
	}
	if p, _ := s.QueryPathFromHashPart(context.Background(), hashPart(nativeHello)); p != nativeHello {
		t.Errorf("QueryPathFromHashPart(hello) = %q", p)
	}
	if p, _ := s.QueryPathFromHashPart(context.Background(), hashPart(crossHello)); p != "" {
		t.Errorf("QueryPathFromHashPart(cross hello) = %q, want none", p)
	}
}

func TestUnmappedReferenceIsNotServed(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	_, err := s.QueryPathInfo(context.Background(), nativeLeaky)
	if err == nil {
		t.Fatal("leaky path served")
	}
	for _, want := range []string{nativeLeaky, crossLeaky, bashX86, "not in the mapping"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if _, err := s.NarFromPath(context.Background(), nativeLeaky); err == nil {
		t.Error("NarFromPath of leaky path succeeded")
	}
	valid, err := s.ValidPaths(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{nativeGlibc, nativeHello, srcPath}
	sort.Strings(want)
	if fmt.Sprint(valid) != fmt.Sprint(want) {
		t.Errorf("ValidPaths = %v, want %v", valid, want)
	}
	if probs := s.Problems(context.Background()); len(probs) != 1 || probs[nativeLeaky] == nil {
		t.Errorf("Problems = %v", probs)
	}
}

func TestNativeLongerThanCross(t *testing.T) {
	f := newFixture(t)
	long := "/nix/store/n0000000000000000000000000000002-glibc-aarch64-unknown-linux-gnu-2.36-extra"
	m, err := mapping.New([]mapping.Entry{{Native: nativeHello, Cross: crossHello}, {Native: long, Cross: crossGlibc}})
	if err != nil {
		t.Fatal(err)
	}
	f.mapping = m
	s := f.store(t)
	for _, p := range []string{long, nativeHello} {
		_, err := s.QueryPathInfo(context.Background(), p)
		if err == nil || !strings.Contains(err.Error(), "longer") || !strings.Contains(err.Error(), long) {
			t.Errorf("QueryPathInfo(%s) err = %v, want one about %s being longer", p, err, long)
		}
	}
}

func TestUpstreamHashMismatchIsNotServed(t *testing.T) {
	f := newFixture(t)
	f.up.infos[crossGlibc].NarHash[0] ^= 1
	s := f.store(t)
	_, err := s.QueryPathInfo(context.Background(), nativeGlibc)
	if err == nil || !strings.Contains(err.Error(), "does not match its narHash") {
		t.Fatalf("err = %v, want a hash mismatch", err)
	}
	ents, _ := os.ReadDir(f.cacheDir)
	if len(ents) != 0 {
		t.Errorf("cache holds %v after a failed rewrite", ents)
	}
}

func TestConcurrentRequestsShareOneRewrite(t *testing.T) {
	f := newFixture(t)
	f.up.delay = 50 * time.Millisecond
	s := f.store(t)
	var wg sync.WaitGroup
	hashes := make([]pathinfo.NarHash, 16)
	for i := range hashes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := s.QueryPathInfo(context.Background(), nativeGlibc)
			if err != nil {
				t.Error(err)
				return
			}
			hashes[i] = info.NarHash
		}()
	}
	wg.Wait()
	if n := f.up.narReads.Load(); n != 1 {
		t.Errorf("upstream NAR read %d times, want 1", n)
	}
	for _, h := range hashes[1:] {
		if h != hashes[0] {
			t.Fatal("concurrent requests saw different hashes")
		}
	}
}

func TestRestartServesFromCache(t *testing.T) {
	f := newFixture(t)
	first := readNAR(t, f.store(t), nativeHello)
	reads := f.up.narReads.Load()
	s2 := f.store(t)
	if got := readNAR(t, s2, nativeHello); !bytes.Equal(got, first) {
		t.Fatal("NAR from cache differs")
	}
	if f.up.narReads.Load() != reads {
		t.Error("restarted store read the upstream NAR again")
	}
}

func TestDamagedCacheIsRebuilt(t *testing.T) {
	f := newFixture(t)
	want := readNAR(t, f.store(t), nativeHello)
	// Corrupt the cached NAR (same length) behind a new store's back.
	narFile := filepath.Join(f.cacheDir, hashPart(nativeHello)+".nar")
	if err := os.WriteFile(narFile, bytes.Repeat([]byte{'x'}, len(want)), 0o644); err != nil {
		t.Fatal(err)
	}
	reads := f.up.narReads.Load()
	s2 := f.store(t)
	if got := readNAR(t, s2, nativeHello); !bytes.Equal(got, want) {
		t.Fatal("damaged cache entry served")
	}
	if f.up.narReads.Load() != reads+1 {
		t.Error("damaged entry was not rebuilt from upstream")
	}
}

func TestCancelledClientDoesNotFailSharedWork(t *testing.T) {
	f := newFixture(t)
	f.up.delay = 30 * time.Millisecond
	s := f.store(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.QueryPathInfo(ctx, nativeGlibc); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("unexpected error %v", err)
	}
	if info, err := s.QueryPathInfo(context.Background(), nativeGlibc); err != nil || info == nil {
		t.Fatalf("after a cancelled request: %v, %v", info, err)
	}
	// The second request joined (or found) the work of the first: had
	// cancelling killed it, the second would have read the NAR again.
	if n := f.up.narReads.Load(); n != 1 {
		t.Errorf("upstream NAR read %d times, want 1: the cancelled request's work was not shared", n)
	}
}

func TestCrossBuiltAfterStartIsServed(t *testing.T) {
	f := newFixture(t)
	narBytes := f.up.nars[crossGlibc]
	f.up.mu.Lock()
	delete(f.up.infos, crossGlibc)
	f.up.mu.Unlock()
	s := f.store(t)
	ctx := context.Background()
	if _, err := s.QueryPathInfo(ctx, nativeGlibc); err == nil || !strings.Contains(err.Error(), "not valid in the upstream store") {
		t.Fatalf("before the build: err = %v", err)
	}
	if _, err := s.QueryPathInfo(ctx, nativeHello); err == nil || !strings.Contains(err.Error(), crossGlibc) {
		t.Fatalf("before the build, hello: err = %v", err)
	}
	f.up.add(crossGlibc, "", narBytes, crossGlibc) // now built
	for _, p := range []string{nativeGlibc, nativeHello} {
		if info, err := s.QueryPathInfo(ctx, p); err != nil || info == nil {
			t.Fatalf("after the build, %s: %v, %v", p, info, err)
		}
	}
}

// stuckUpstream never answers until released.
type stuckUpstream struct {
	*fakeUpstream
	release chan struct{}
}

func (u *stuckUpstream) QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	select {
	case <-u.release:
		return u.fakeUpstream.QueryPathInfo(ctx, p)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestStuckUpstreamDoesNotHoldRequests(t *testing.T) {
	f := newFixture(t)
	up := &stuckUpstream{fakeUpstream: f.up, release: make(chan struct{})}
	c, _ := narcache.Open(f.cacheDir)
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: up, Cache: c, SigningKey: &f.key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.QueryPathInfo(ctx, nativeHello)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the request's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request still waiting on a stuck upstream after its deadline")
	}
	// The shared work goes on; once the upstream answers, it is served.
	close(up.release)
	if info, err := s.QueryPathInfo(context.Background(), nativeHello); err != nil || info == nil {
		t.Fatalf("after the upstream recovered: %v, %v", info, err)
	}
}

type panickyUpstream struct{ *fakeUpstream }

func (panickyUpstream) NarFromPath(context.Context, string) (io.ReadCloser, error) {
	panic("upstream exploded")
}

func TestPanicInSharedWorkIsAnError(t *testing.T) {
	f := newFixture(t)
	c, _ := narcache.Open(f.cacheDir)
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: panickyUpstream{f.up}, Cache: c, SigningKey: &f.key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	_, err = s.QueryPathInfo(context.Background(), nativeGlibc)
	if err == nil || !strings.Contains(err.Error(), "upstream exploded") {
		t.Fatalf("err = %v, want the panic as an error", err)
	}
}

func TestNotServedMatchesErrNotServed(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	_, err := s.QueryPathInfo(context.Background(), nativeLeaky)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "is not valid") {
		t.Fatalf("err = %v: want one matching ErrNotServed and saying 'is not valid'", err)
	}
}

func TestMissingCacheFileIsRebuilt(t *testing.T) {
	f := newFixture(t)
	want := readNAR(t, f.store(t), nativeHello)
	base := filepath.Join(f.cacheDir, hashPart(nativeHello))
	removed := 0
	for _, name := range []string{base + ".nar", base + ".nar.zst"} {
		if os.Remove(name) == nil {
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("removed %d NAR files under %s, want 1", removed, base)
	}
	reads := f.up.narReads.Load()
	for i := 0; i < 2; i++ { // also after a restart
		if got := readNAR(t, f.store(t), nativeHello); !bytes.Equal(got, want) {
			t.Fatalf("round %d: NAR differs after the cache file was lost", i)
		}
	}
	if got := f.up.narReads.Load(); got != reads+1 {
		t.Errorf("upstream NAR read %d more times, want 1 (one rebuild, then served from the cache)", got-reads)
	}
}

// stallingUpstream sends the first bytes of a NAR, then nothing, until the
// request is cancelled.
type stallingUpstream struct{ *fakeUpstream }

func (u stallingUpstream) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	rc, err := u.fakeUpstream.NarFromPath(ctx, p)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.MultiReader(io.LimitReader(rc, 40), &blockUntil{ctx})), nil
}

type blockUntil struct{ ctx context.Context }

func (b *blockUntil) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func TestStalledUpstreamFailsTheRewrite(t *testing.T) {
	f := newFixture(t)
	c, _ := narcache.Open(f.cacheDir)
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: stallingUpstream{f.up}, Cache: c, SigningKey: &f.key,
		UpstreamStallTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	start := time.Now()
	_, err = s.QueryPathInfo(context.Background(), nativeGlibc)
	if err == nil || !strings.Contains(err.Error(), "no NAR data") {
		t.Fatalf("err = %v, want the stall named", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stall detected only after %v", d)
	}
	if ents, _ := os.ReadDir(f.cacheDir); len(ents) != 0 {
		t.Fatalf("cache holds %v after a stalled rewrite", ents)
	}
}

// TestDamagedMetadataIsRebuilt: cached metadata that parses but names
// other references than the mapping gives is not signed as it is.
func TestDamagedMetadataIsRebuilt(t *testing.T) {
	f := newFixture(t)
	want, err := f.store(t).QueryPathInfo(context.Background(), nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(f.cacheDir, hashPart(nativeHello)+".json")
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	// One character of a reference changed: the JSON stays valid.
	damaged := bytes.Replace(b, []byte(nativeGlibc), []byte(nativeGlibc[:len(nativeGlibc)-1]+"7"), 1)
	if bytes.Equal(damaged, b) {
		t.Fatal("test did not damage the metadata")
	}
	if err := os.WriteFile(meta, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	reads := f.up.narReads.Load()
	got, err := f.store(t).QueryPathInfo(context.Background(), nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.References) != fmt.Sprint(want.References) || got.NarHash != want.NarHash {
		t.Fatalf("references %v, narHash %s; want %v, %s", got.References, got.NarHash, want.References, want.NarHash)
	}
	if f.up.narReads.Load() != reads+1 {
		t.Error("entry with damaged metadata was not rebuilt")
	}
}

// TestUpstreamRebuiltIsPickedUp: when the cross path is rebuilt with other
// bytes after its path info was read (garbage-collected and built again,
// not reproducibly), the failed rewrite is not remembered: the next request
// asks the upstream again and serves the new build.
func TestUpstreamRebuiltIsPickedUp(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	// Path info read (by a closure walk), NAR not yet rewritten.
	if _, err := s.ValidPaths(context.Background()); err != nil {
		t.Fatal(err)
	}
	rebuilt := makeNAR(t, file{path: "/"}, file{path: "/lib/"},
		file{path: "/lib/ld-linux-aarch64.so.1", contents: "\x7fELF\x00 rebuilt " + crossGlibc + "\x00", exec: true})
	f.up.add(crossGlibc, "", rebuilt, crossGlibc)
	if _, err := s.QueryPathInfo(context.Background(), nativeGlibc); err == nil || !strings.Contains(err.Error(), "upstream NAR of "+crossGlibc) {
		t.Fatalf("first request after the rebuild: err = %v, want the size or hash mismatch", err)
	}
	got := readNAR(t, s, nativeGlibc)
	if !bytes.Contains(got, []byte("rebuilt "+pad(nativeGlibc, crossGlibc))) {
		t.Fatalf("the rebuilt cross path is not what is served:\n%q", got)
	}
}

// TestContentAddressedFoundAfterLaterBuild: a content-addressed path
// reachable only through a cross path not built yet is not served; once
// that path is built, the next walk of the mapped closures (at most every
// caRewalkInterval) finds it.
func TestContentAddressedFoundAfterLaterBuild(t *testing.T) {
	f := newFixture(t)
	f.up.mu.Lock()
	helloInfo, helloNAR := f.up.infos[crossHello], f.up.nars[crossHello]
	delete(f.up.infos, crossHello)
	f.up.mu.Unlock()
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	now := time.Unix(1700000000, 0)
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: f.up, Cache: c, SigningKey: &f.key, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	if info, err := s.QueryPathInfo(ctx, srcPath); err != nil || info != nil {
		t.Fatalf("before hello is built: %v, %v; want not served", info, err)
	}
	f.up.add(crossHello, "", helloNAR, helloInfo.References...)
	if info, err := s.QueryPathInfo(ctx, srcPath); err != nil || info != nil {
		t.Fatalf("within the rewalk interval: %v, %v; want not served yet", info, err)
	}
	now = now.Add(caRewalkInterval)
	if info, err := s.QueryPathInfo(ctx, srcPath); err != nil || info == nil {
		t.Fatalf("after the rewalk interval: %v, %v; want it served", info, err)
	}
}

// TestRewriterSettingsInCacheKey: entries written with other rewriter
// settings are rebuilt, not served.
func TestRewriterSettingsInCacheKey(t *testing.T) {
	f := newFixture(t)
	readNAR(t, f.store(t), nativeHello)
	reads := f.up.narReads.Load()
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: f.up, Cache: c, SigningKey: &f.key, Rewrite: rewrite.Options{TextMax: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	readNAR(t, s, nativeHello)
	if got := f.up.narReads.Load(); got != reads+1 {
		t.Errorf("upstream NAR read %d more times, want 1 (a rebuild)", got-reads)
	}
}

// TestDamageFoundWhileStreamingIsForgotten: a compressed cached NAR
// damaged after this process verified it fails the read that finds the
// damage (zstd's checksum), and the next request rebuilds it instead of
// trusting the remembered entry.
func TestDamageFoundWhileStreamingIsForgotten(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	want := readNAR(t, s, nativeHello)
	reads := f.up.narReads.Load()

	// Compact the entry now, as the background compactor would.
	base := filepath.Join(f.cacheDir, hashPart(nativeHello))
	js, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Key string }
	if err := json.Unmarshal(js, &meta); err != nil {
		t.Fatal(err)
	}
	other, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	e, err := other.Lookup(nativeHello, meta.Key)
	if err != nil || e == nil {
		t.Fatalf("lookup: %v, %v", e, err)
	}
	if err := other.Compact(e); err != nil {
		t.Fatal(err)
	}
	// This process verifies the compressed NAR on its first read of it.
	if got := readNAR(t, s, nativeHello); !bytes.Equal(got, want) {
		t.Fatal("compressed NAR differs")
	}
	// Then damage it in place, keeping inode, size and mtime: only the
	// checks made while streaming can see it.
	zst := base + ".nar.zst"
	fi, err := os.Stat(zst)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(zst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("XXXX"), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if err := os.Chtimes(zst, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}

	rc, err := s.NarFromPath(context.Background(), nativeHello)
	if err != nil {
		t.Fatalf("open of the damaged entry: %v (the damage should only show while streaming)", err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, narcache.ErrDamaged) {
		t.Fatalf("read of the damaged entry: err = %v, want ErrDamaged", err)
	}
	if got := readNAR(t, s, nativeHello); !bytes.Equal(got, want) {
		t.Fatal("rebuilt NAR differs")
	}
	if got := f.up.narReads.Load(); got != reads+1 {
		t.Errorf("upstream NAR read %d more times, want 1 (a rebuild)", got-reads)
	}
}

// Prefetch needs no signing key: it only fills the cache, and a server
// opened on that cache afterwards serves without rewriting.
func TestPrefetchWithoutKeyWarmsTheCache(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: f.up, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsigned.Close)
	ctx := context.Background()
	size, err := unsigned.Prefetch(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	if unsigned.PublicKey() != "" {
		t.Errorf("PublicKey() = %q for a store without a key", unsigned.PublicKey())
	}
	if info, err := unsigned.QueryPathInfo(ctx, nativeHello); err != nil || len(info.Sigs) != 0 {
		t.Errorf("unsigned store: info %+v, %v; want no signatures", info, err)
	}
	if _, err := unsigned.Prefetch(ctx, nativeLeaky); err == nil || !strings.Contains(err.Error(), "is not valid in this store") {
		t.Errorf("Prefetch(leaky) = %v, want a not-served error", err)
	}
	if _, err := unsigned.Prefetch(ctx, "/nix/store/z0000000000000000000000000000009-nope"); err == nil {
		t.Error("Prefetch(unknown path) succeeded")
	}
	c.Close()

	reads := f.up.narReads.Load()
	s := f.store(t)
	info, err := s.QueryPathInfo(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	if info.NarSize != size {
		t.Errorf("served narSize %d, prefetched %d", info.NarSize, size)
	}
	readNAR(t, s, nativeHello)
	if got := f.up.narReads.Load(); got != reads {
		t.Errorf("serving after prefetch read %d upstream NARs, want 0", got-reads)
	}
}

// Asking for a path prepares its references in the background: the
// client asks for them next, and finds them ready.
func TestReadAheadPreparesReferences(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rewrote := make(chan uint64, 8)
	s, err := New(Config{Mapping: f.mapping, Upstream: f.up, Cache: c, SigningKey: &f.key,
		Hooks: Hooks{Rewrote: func(_, served uint64, _ time.Duration) { rewrote <- served }}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	if _, err := s.QueryPathInfo(ctx, nativeHello); err != nil {
		t.Fatal(err)
	}
	// hello, and glibc by read-ahead; the source is content-addressed and
	// read ahead too (it is served unchanged, but still prepared).
	deadline := time.After(30 * time.Second)
	for n := 0; n < 3; n++ {
		select {
		case <-rewrote:
		case <-deadline:
			t.Fatalf("%d paths prepared, want hello and its two references", n)
		}
	}
	reads := f.up.narReads.Load()
	for _, p := range []string{nativeGlibc, srcPath} {
		if _, err := s.QueryPathInfo(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.up.narReads.Load(); got != reads {
		t.Errorf("asking for the references read %d more upstream NARs, want 0", got-reads)
	}
}

// blockingUpstream holds the NARs of some paths until released.
type blockingUpstream struct {
	*fakeUpstream
	block   map[string]bool
	entered chan string
	release chan struct{}
}

func (u blockingUpstream) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	if u.block[p] {
		u.entered <- p
		select {
		case <-u.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return u.fakeUpstream.NarFromPath(ctx, p)
}

// Read-ahead never takes every rewrite slot: with read-ahead busy on
// every slot it may take, a path a client asks for is rewritten at once.
func TestReadAheadLeavesARewriteSlot(t *testing.T) {
	f := newFixture(t)
	const crossOther, nativeOther = "/nix/store/c0000000000000000000000000000006-other-aarch64-unknown-linux-gnu-1.0", "/nix/store/n0000000000000000000000000000006-other-1.0"
	f.up.add(crossOther, "", makeNAR(t, file{path: "/", contents: "other"}))
	m, err := mapping.New(append(f.mapping.Entries(), mapping.Entry{Native: nativeOther, Cross: crossOther}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	up := blockingUpstream{fakeUpstream: f.up, block: map[string]bool{crossGlibc: true, srcPath: true},
		entered: make(chan string, 2), release: make(chan struct{})}
	s, err := New(Config{Mapping: m, Upstream: up, Cache: c, Rewrites: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(up.release) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// hello's references, glibc and the source, go to read-ahead, whose
	// one worker blocks on the first.
	if _, err := s.QueryPathInfo(ctx, nativeHello); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.entered:
	case <-ctx.Done():
		t.Fatal("read-ahead did not start")
	}
	if _, err := s.QueryPathInfo(ctx, nativeOther); err != nil {
		t.Fatalf("a client's path waited behind read-ahead: %v", err)
	}
	// One slot of two for read-ahead; with a single slot, none.
	for rewrites, want := range map[int]int{1: 0, 2: 1, 4: 3} {
		s, err := New(Config{Mapping: f.mapping, Upstream: f.up, Cache: c, Rewrites: rewrites})
		if err != nil {
			t.Fatal(err)
		}
		if w := s.aheadWorkers(); w != want {
			t.Errorf("Rewrites %d: %d read-ahead workers, want %d", rewrites, w, want)
		}
		s.Close()
	}
}

// The read-ahead queue is bounded: a path with more references than it
// holds does not block the request or grow memory.
func TestReadAheadQueueIsBounded(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{Mapping: f.mapping, Upstream: f.up, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	// Workers not started: nothing drains the queue.
	s.aheadStart.Do(func() {})
	t.Cleanup(s.Close)
	refs := make([]string, aheadQueue+100)
	for i := range refs {
		refs[i] = fmt.Sprintf("/nix/store/%032d-ref", i)
	}
	src := &source{served: nativeHello, info: &pathinfo.PathInfo{References: refs}}
	s.readAhead(src)
	if got := len(s.ahead); got != aheadQueue {
		t.Errorf("queue holds %d paths, want its bound %d", got, aheadQueue)
	}
	queued := 0
	s.aheadQueued.Range(func(any, any) bool { queued++; return true })
	if queued != aheadQueue {
		t.Errorf("%d paths marked queued, want %d (those dropped are not remembered)", queued, aheadQueue)
	}
}

// overlapUpstream records whether two path info queries ever ran at once.
// Queries for paths in wait block (up to a bound) until another query is
// in flight.
type overlapUpstream struct {
	*fakeUpstream
	wait     map[string]bool
	mu       sync.Mutex
	inFlight int
	overlap  bool
	changed  chan struct{} // closed and replaced when inFlight changes
}

func (u *overlapUpstream) QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	u.mu.Lock()
	u.inFlight++
	if u.inFlight > 1 {
		u.overlap = true
	}
	close(u.changed)
	u.changed = make(chan struct{})
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.inFlight--
		u.mu.Unlock()
	}()
	deadline := time.After(2 * time.Second)
	for u.wait[p] {
		u.mu.Lock()
		overlap, changed := u.overlap, u.changed
		u.mu.Unlock()
		if overlap {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			return u.fakeUpstream.QueryPathInfo(ctx, p)
		}
	}
	return u.fakeUpstream.QueryPathInfo(ctx, p)
}

// A closure walk asks for the upstream path infos of a level at once.
func TestClosureWalkQueriesConcurrently(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	up := &overlapUpstream{fakeUpstream: f.up, wait: map[string]bool{crossGlibc: true, srcPath: true}, changed: make(chan struct{})}
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: up, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	// hello references glibc and the source: one level of two paths.
	if _, err := s.QueryPathInfo(context.Background(), nativeHello); err != nil {
		t.Fatal(err)
	}
	if !up.overlap {
		t.Error("the closure walk asked for hello's references one at a time")
	}
}

// unusableUpstream refuses some paths the way a binary cache refuses an
// untrusted narinfo.
type unusableUpstream struct {
	*fakeUpstream
	refuse map[string]bool
}

func (u unusableUpstream) QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	if u.refuse[p] {
		return nil, fmt.Errorf("no trusted signature for %s: signed only by other-1: %w", p, upstream.ErrUnusable)
	}
	return u.fakeUpstream.QueryPathInfo(ctx, p)
}

// A path the upstream has but must not be used is not served, and neither
// is what references it; it is no failure of the store.
func TestUnusableUpstreamPathIsNotServed(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	up := unusableUpstream{fakeUpstream: f.up, refuse: map[string]bool{crossGlibc: true}}
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: up, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for p, want := range map[string]string{
		nativeGlibc: "its cross path cannot be used: no trusted signature for " + crossGlibc,
		nativeHello: "its closure holds a path that cannot be used: no trusted signature for " + crossGlibc,
	} {
		_, err := s.QueryPathInfo(context.Background(), p)
		if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "signed only by other-1") {
			t.Errorf("QueryPathInfo(%s) = %v; want not served: %q and the upstream's reason", p, err, want)
		}
	}
	if n := f.up.narReads.Load(); n != 0 {
		t.Errorf("%d upstream NARs read for unservable paths", n)
	}
}

// Close cancels the work that requests left running (rewrites are
// detached from them) and waits for it.
func TestCloseCancelsDetachedWork(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	up := blockingUpstream{fakeUpstream: f.up, block: map[string]bool{crossGlibc: true},
		entered: make(chan string, 1), release: make(chan struct{})}
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: up, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = s.QueryPathInfo(ctx, nativeGlibc) }()
	<-up.entered
	cancel() // the request leaves; its rewrite goes on, blocked upstream
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		close(up.release)
		t.Fatal("Close did not cancel the rewrite it waits for")
	}
	if _, err := s.QueryPathInfo(context.Background(), nativeGlibc); err == nil {
		t.Error("a closed store took new work")
	}
	if tmps, _ := filepath.Glob(filepath.Join(f.cacheDir, ".tmp-*")); len(tmps) > 0 {
		t.Errorf("temporary files left after Close: %v", tmps)
	}
}

// A NAR the upstream refuses while it is read (a binary cache's file that
// does not match its narinfo) makes the path not served, not a failure.
type corruptNARUpstream struct{ *fakeUpstream }

func (u corruptNARUpstream) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	rc, err := u.fakeUpstream.NarFromPath(ctx, p)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.MultiReader(rc, errReader{fmt.Errorf("the NAR file of %s does not match its FileHash: %w", p, upstream.ErrUnusable)})), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestUnusableNARIsNotServed(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{NoReadAhead: true, Mapping: f.mapping, Upstream: corruptNARUpstream{f.up}, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	_, err = s.QueryPathInfo(context.Background(), nativeGlibc)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "does not match its FileHash") {
		t.Fatalf("QueryPathInfo = %v, want not served with the upstream's reason", err)
	}
}

// A path whose read-ahead failed is left alone for a while: every
// referrer of a broken dependency would otherwise download it again.
func TestReadAheadRemembersFailures(t *testing.T) {
	f := newFixture(t)
	c, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	now := time.Unix(1700000000, 0)
	s, err := New(Config{Mapping: f.mapping, Upstream: f.up, Cache: c, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	s.aheadStart.Do(func() {}) // no workers: the queue shows what was asked
	t.Cleanup(s.Close)
	src := &source{served: nativeHello, info: &pathinfo.PathInfo{References: []string{crossGlibc}}}
	s.aheadFailed.Store(nativeGlibc, now)
	s.readAhead(src)
	if n := len(s.ahead); n != 0 {
		t.Fatalf("a path that just failed was queued again (%d queued)", n)
	}
	now = now.Add(aheadRetryAfter)
	s.readAhead(src)
	if n := len(s.ahead); n != 1 {
		t.Fatalf("%d queued after the retry interval, want 1", n)
	}
}
