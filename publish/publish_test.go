package publish

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/binarycache"
	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/pathinfo"
)

// Paths of the test source; hash parts are valid nixbase32.
const (
	appPath = "/nix/store/0f7jqcwv2hb0akd1lhd8rbm1wsc0qhkm-app"
	libPath = "/nix/store/1g9rsgy1mvz4x55y2whgksxa3qcc0ylv-lib"
	// caPath is the fixed-output path of its NAR (a file "source\n"), so
	// that a reader checking content addresses believes it.
	caPath  = "/nix/store/5n3wwms5bzvb3i7p0f5414452fnlm2dl-source"
	drvPath = "/nix/store/3mrw3pf1n3rd4s1dl6lp3vxxvb3dd8b4-app.drv"
)

// fakeSource serves signed paths from memory, as the store would.
type fakeSource struct {
	infos    map[string]*pathinfo.PathInfo
	nars     map[string][]byte
	problems map[string]error
	// corrupt paths stream other bytes than their path info says.
	corrupt map[string]bool
	// block, when set, makes NarFromPath of that path hand out its first
	// bytes, close started, then wait for ctx.
	block   string
	started chan struct{}
}

func newSource(t *testing.T, sk signature.SecretKey, upstream signature.SecretKey) *fakeSource {
	t.Helper()
	s := &fakeSource{infos: map[string]*pathinfo.PathInfo{}, nars: map[string][]byte{}, problems: map[string]error{}, corrupt: map[string]bool{}}
	// The app's NAR is large enough to make compression visible.
	big := strings.Repeat("machine code with "+libPath+" in it\n", 20000)
	add := func(p string, nar []byte, refs []string, deriver, ca string, signers ...signature.SecretKey) {
		info := &pathinfo.PathInfo{Path: p, NarHash: sha256.Sum256(nar), NarSize: uint64(len(nar)), References: refs, Deriver: deriver, CA: ca}
		for _, k := range signers {
			sig, err := info.Sign(k)
			if err != nil {
				t.Fatal(err)
			}
			info.Sigs = append(info.Sigs, sig)
		}
		s.infos[p], s.nars[p] = info, nar
	}
	add(appPath, nartest.Encode(nartest.Dir(nartest.E("bin", nartest.Dir(nartest.E("app", nartest.Exe(big)))))), []string{appPath, libPath, caPath}, drvPath, "", sk)
	add(libPath, nartest.Encode(nartest.Reg("lib\n")), nil, "", "", sk)
	add(caPath, nartest.Encode(nartest.Reg("source\n")), nil, "", "fixed:r:sha256:1fh8i0lz2kr7w0mfxsr9py36j1xc43kj3gvk529dj1qq8jxfy0sb", upstream, sk)
	return s
}

func (s *fakeSource) ValidPaths(context.Context) ([]string, error) {
	var out []string
	for p := range s.infos {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func (s *fakeSource) Problems(context.Context) map[string]error { return s.problems }

func (s *fakeSource) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	return s.infos[p].Clone(), nil
}

func (s *fakeSource) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	nar := s.nars[p]
	if s.corrupt[p] {
		nar = append(bytes.Clone(nar[:len(nar)-1]), nar[len(nar)-1]^1)
	}
	if p == s.block {
		return io.NopCloser(io.MultiReader(bytes.NewReader(nar[:100]), &blockReader{ctx: ctx, started: s.started})), nil
	}
	return io.NopCloser(bytes.NewReader(nar)), nil
}

type blockReader struct {
	ctx     context.Context
	started chan struct{}
	once    sync.Once
}

func (b *blockReader) Read([]byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func keypair(t *testing.T, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

// snapshot is every file of a tree with its contents and modification
// time, to show that a run changed nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var data []byte
		if !d.IsDir() {
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[p] = fmt.Sprintf("%v %v %x", fi.Mode(), fi.ModTime().UnixNano(), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkCache reads dir back with the project's binary-cache reader,
// trusting only pk, and compares every path with the source.
func checkCache(t *testing.T, url string, pk signature.PublicKey, src *fakeSource, paths ...string) {
	t.Helper()
	ctx := t.Context()
	c, err := binarycache.Open(t.Context(), url, binarycache.Options{TrustedKeys: []signature.PublicKey{pk}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range paths {
		info, err := c.QueryPathInfo(ctx, p)
		if err != nil || info == nil {
			t.Fatalf("QueryPathInfo(%s) = %v, %v", p, info, err)
		}
		want := src.infos[p]
		if info.NarHash != want.NarHash || info.NarSize != want.NarSize || strings.Join(info.References, " ") != strings.Join(want.References, " ") ||
			info.Deriver != want.Deriver || info.CA != want.CA || strings.Join(info.Sigs, " ") != strings.Join(want.Sigs, " ") {
			t.Errorf("QueryPathInfo(%s) = %+v, want %+v", p, info, want)
		}
		rc, err := c.NarFromPath(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		nar, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(nar, src.nars[p]) {
			t.Errorf("NarFromPath(%s): %d bytes, %v; want the source's %d bytes", p, len(nar), err, len(src.nars[p]))
		}
	}
}

func openFile(t *testing.T, dir string) Destination {
	t.Helper()
	d, err := Open(t.Context(), "file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPublishFile(t *testing.T) {
	for _, compression := range Compressions {
		t.Run(compression, func(t *testing.T) {
			sk, pk := keypair(t, "decross-test-1")
			upSK, _ := keypair(t, "upstream-1")
			src := newSource(t, sk, upSK)
			dir := t.TempDir()
			var started, done int
			res, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk, Compression: compression, Jobs: 2,
				Start: func(n int) { started = n }, Done: func(uint64) { done++ }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Published != 3 || res.Skipped != 0 || len(res.Failed) != 0 || started != 3 || done != 3 {
				t.Fatalf("first run: %+v, start(%d), %d done; want 3 published", res, started, done)
			}
			if compression != "none" && res.FileBytes >= res.NarBytes/4 {
				t.Errorf("%d NAR bytes compressed into %d", res.NarBytes, res.FileBytes)
			}
			checkCache(t, "file://"+dir, pk, src, appPath, libPath, caPath)
			info, err := os.ReadFile(filepath.Join(dir, "nix-cache-info"))
			if err != nil || string(info) != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n" {
				t.Errorf("nix-cache-info %q, %v", info, err)
			}

			before := snapshot(t, dir)
			res, err = Publish(t.Context(), src, openFile(t, dir), Options{Key: pk, Compression: compression})
			if err != nil {
				t.Fatal(err)
			}
			if res.Published != 0 || res.Skipped != 3 {
				t.Errorf("second run: %+v, want 3 skipped", res)
			}
			after := snapshot(t, dir)
			for p, v := range before {
				if after[p] != v {
					t.Errorf("second run changed %s: %s -> %s", p, v, after[p])
				}
			}
			if len(after) != len(before) {
				t.Errorf("second run left %d files, the first %d", len(after), len(before))
			}
		})
	}
}

// TestPublishReplaces: a narinfo not signed by the key, or signed over
// another fingerprint (the path's contents changed), is written again.
func TestPublishReplaces(t *testing.T) {
	sk, pk := keypair(t, "decross-test-1")
	otherSK, otherPK := keypair(t, "other-1")
	tests := []struct {
		name   string
		first  signature.SecretKey
		firstK signature.PublicKey
		change func(*fakeSource)
	}{
		{"other key", otherSK, otherPK, func(*fakeSource) {}},
		{"other contents", sk, pk, func(s *fakeSource) {
			nar := nartest.Encode(nartest.Reg("lib, rebuilt\n"))
			info := &pathinfo.PathInfo{Path: libPath, NarHash: sha256.Sum256(nar), NarSize: uint64(len(nar))}
			sig, err := info.Sign(sk)
			if err != nil {
				t.Fatal(err)
			}
			info.Sigs = []string{sig}
			s.infos[libPath], s.nars[libPath] = info, nar
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			upSK, _ := keypair(t, "upstream-1")
			old := newSource(t, tt.first, upSK)
			if _, err := Publish(t.Context(), old, openFile(t, dir), Options{Key: tt.firstK}); err != nil {
				t.Fatal(err)
			}
			src := newSource(t, sk, upSK)
			tt.change(src)
			res, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk})
			if err != nil {
				t.Fatal(err)
			}
			if res.Published == 0 {
				t.Errorf("%+v: nothing published again", res)
			}
			checkCache(t, "file://"+dir, pk, src, appPath, libPath, caPath)
		})
	}
}

// resign signs p's path info again with sk, after a change to it.
func (s *fakeSource) resign(t *testing.T, p string, sk signature.SecretKey) {
	t.Helper()
	sig, err := s.infos[p].Sign(sk)
	if err != nil {
		t.Fatal(err)
	}
	s.infos[p].Sigs = []string{sig}
}

// TestPublishFailures: a path that fails is reported and leaves nothing
// behind, and so is every path that references it, so that the cache
// stays closed under references; the others are published; problems of
// the source are passed on.
func TestPublishFailures(t *testing.T) {
	sk, pk := keypair(t, "decross-test-1")
	upSK, _ := keypair(t, "upstream-1")
	otherSK, _ := keypair(t, "other-1")
	const leaky = "/nix/store/4a1dmbj8k0vnr3s2f7xyzqhsc6w2z5a0-leaky"
	tests := []struct {
		name   string
		break_ func(*fakeSource)
		failed map[string]string // path -> what its error says
		total  int
	}{
		{"corrupt NAR", func(s *fakeSource) { s.corrupt[libPath] = true }, map[string]string{
			libPath: "NAR does not match its path info",
			appPath: "not published: its reference " + libPath + " failed",
		}, 3},
		{"not signed by the key", func(s *fakeSource) { s.resign(t, libPath, otherSK) }, map[string]string{
			libPath: "not signed by decross-test-1",
			appPath: "not published: its reference " + libPath + " failed",
		}, 3},
		{"reference cannot be served", func(s *fakeSource) {
			delete(s.infos, libPath)
			s.problems[libPath] = errors.New("it leaks a cross path")
		}, map[string]string{
			appPath: "not published: its reference " + libPath + " cannot be served",
		}, 2},
		{"reference cycle", func(s *fakeSource) {
			s.infos[libPath].References = []string{appPath}
			s.resign(t, libPath, sk)
		}, map[string]string{
			libPath: "cycle",
			appPath: "cycle",
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, jobs := range []int{1, 3} {
				dir := t.TempDir()
				src := newSource(t, sk, upSK)
				src.problems[leaky] = errors.New("it leaks a cross path")
				tt.break_(src)
				res, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk, Jobs: jobs})
				if err != nil {
					t.Fatal(err)
				}
				if res.Total != tt.total || res.Published != 1 || len(res.Failed) != len(tt.failed) {
					t.Errorf("jobs %d: %+v, want %d paths, %s published and %d failed", jobs, res, tt.total, caPath, len(tt.failed))
				}
				for p, want := range tt.failed {
					if err := res.Failed[p]; err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("jobs %d: %s failed with %v, want %q", jobs, p, err, want)
					}
					if _, err := os.Stat(filepath.Join(dir, hashPart(p)+".narinfo")); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("jobs %d: narinfo of the failed path %s: %v", jobs, p, err)
					}
				}
				if len(res.Problems) != len(src.problems) {
					t.Errorf("problems %v, want the source's", res.Problems)
				}
				checkCache(t, "file://"+dir, pk, src, caPath)
				checkClosed(t, dir)
				checkNoTemp(t, dir)
			}
		})
	}
}

// checkClosed fails unless every reference of every narinfo in dir has a
// narinfo: what nix copy --to guarantees, and clients rely on.
func checkClosed(t *testing.T, dir string) {
	t.Helper()
	infos, err := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range infos {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			refs, ok := strings.CutPrefix(strings.TrimSpace(line), "References:")
			if !ok {
				continue
			}
			for _, r := range strings.Fields(refs) {
				if _, err := os.Stat(filepath.Join(dir, r[:32]+".narinfo")); err != nil {
					t.Errorf("%s references %s, which has no narinfo: %v", filepath.Base(f), r, err)
				}
			}
		}
	}
}

func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

// TestPublishInterrupted: cancelling in the middle of a NAR leaves no
// narinfo for it and no temporary file.
func TestPublishInterrupted(t *testing.T) {
	sk, pk := keypair(t, "decross-test-1")
	upSK, _ := keypair(t, "upstream-1")
	src := newSource(t, sk, upSK)
	src.block, src.started = appPath, make(chan struct{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-src.started
		cancel()
	}()
	_, err := Publish(ctx, src, openFile(t, dir), Options{Key: pk})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish: %v, want it interrupted", err)
	}
	if _, err := os.Stat(filepath.Join(dir, hashPart(appPath)+".narinfo")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("narinfo of the interrupted path: %v", err)
	}
	checkNoTemp(t, dir)
	nars, err := os.ReadDir(filepath.Join(dir, "nar"))
	if err != nil {
		t.Fatal(err)
	}
	// Jobs is 1 and paths go in order: only the app's NAR was started.
	if len(nars) != 0 {
		t.Errorf("nar/ holds %d files, want none", len(nars))
	}
}

// hookDest lets a test act after a NAR is committed, before Publish goes
// on with that path.
type hookDest struct {
	Destination
	afterCommit func(ctx context.Context, key string)
}

func (d *hookDest) Commit(ctx context.Context, key, contentType string, f *os.File, size int64) error {
	err := d.Destination.Commit(ctx, key, contentType, f, size)
	d.afterCommit(ctx, key)
	return err
}

// TestPublishInterruptedClosed: a run cancelled while a reference's NAR
// streams, after its referrer's NAR was written, leaves no narinfo whose
// references have none; the next run completes the cache.
func TestPublishInterruptedClosed(t *testing.T) {
	sk, pk := keypair(t, "decross-test-1")
	upSK, _ := keypair(t, "upstream-1")
	src := newSource(t, sk, upSK)
	src.block, src.started = libPath, make(chan struct{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	appNar := make(chan struct{})
	var once sync.Once
	dst := &hookDest{Destination: openFile(t, dir), afterCommit: func(ctx context.Context, key string) {
		if strings.HasSuffix(key, ".narinfo") {
			checkClosed(t, dir) // at every narinfo, not only at the end
			return
		}
		// Uncompressed, the app's NAR file is known by its size.
		info, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
		if err == nil && info.Size() == int64(len(src.nars[appPath])) {
			once.Do(func() { close(appNar) })
		}
	}}
	go func() {
		// The app's NAR is written while the lib's streams, blocked. Its
		// narinfo must wait for the lib's: give a run that did not wait
		// the time to write it (checkClosed above then fails), and cancel.
		<-appNar
		<-src.started
		app := filepath.Join(dir, hashPart(appPath)+".narinfo")
		for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(app); err == nil {
				break
			}
		}
		cancel()
	}()
	_, err := Publish(ctx, src, dst, Options{Key: pk, Jobs: 3, Compression: "none"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish: %v, want it interrupted", err)
	}
	for _, p := range []string{appPath, libPath} {
		if _, err := os.Stat(filepath.Join(dir, hashPart(p)+".narinfo")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("narinfo of %s: %v", p, err)
		}
	}
	checkClosed(t, dir)
	checkNoTemp(t, dir)

	src.block = ""
	res, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk, Jobs: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published+res.Skipped != 3 || len(res.Failed) != 0 {
		t.Errorf("next run: %+v", res)
	}
	checkCache(t, "file://"+dir, pk, src, appPath, libPath, caPath)
	checkClosed(t, dir)
}

// TestPublishRepairsMissingNar: a narinfo whose NAR file is gone, empty
// or cut short is not taken as published; the path is written again.
func TestPublishRepairsMissingNar(t *testing.T) {
	for _, tt := range []struct {
		name   string
		damage func(name string) error
	}{
		{"removed", os.Remove},
		{"emptied", func(name string) error { return os.Truncate(name, 0) }},
		{"cut short", func(name string) error {
			fi, err := os.Stat(name)
			if err != nil {
				return err
			}
			return os.Truncate(name, fi.Size()-1)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sk, pk := keypair(t, "decross-test-1")
			upSK, _ := keypair(t, "upstream-1")
			src := newSource(t, sk, upSK)
			dir := t.TempDir()
			if _, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk}); err != nil {
				t.Fatal(err)
			}
			nar := filepath.Join(dir, filepath.FromSlash(narURL(t, dir, appPath)))
			whole, err := os.ReadFile(nar)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.damage(nar); err != nil {
				t.Fatal(err)
			}
			res, err := Publish(t.Context(), src, openFile(t, dir), Options{Key: pk})
			if err != nil {
				t.Fatal(err)
			}
			if res.Published != 1 || res.Skipped != 2 {
				t.Errorf("second run: %+v, want the app published again and 2 skipped", res)
			}
			if got, err := os.ReadFile(nar); err != nil || !bytes.Equal(got, whole) {
				t.Errorf("%s after the second run: %d bytes, %v; want the %d bytes of the first", nar, len(got), err, len(whole))
			}
			checkCache(t, "file://"+dir, pk, src, appPath, libPath, caPath)
		})
	}
}

// narURL is the URL of p's NAR in its narinfo in dir.
func narURL(t *testing.T, dir, p string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, hashPart(p)+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "URL: "); ok {
			return u
		}
	}
	t.Fatalf("narinfo of %s has no URL:\n%s", p, data)
	return ""
}

// TestPublishCacheInfo: an existing nix-cache-info is kept as it is; a
// missing field takes Nix's default and conflicts with nothing (nix copy
// --to writes only StoreDir); another store or another explicit priority
// is refused, saying what to do.
func TestPublishCacheInfo(t *testing.T) {
	sk, pk := keypair(t, "decross-test-1")
	upSK, _ := keypair(t, "upstream-1")
	tests := []struct {
		name, info string
		want       string // in the error; "" for none
	}{
		{"same, another layout", "WantMassQuery: 1\nStoreDir: /nix/store\nPriority: 50\n", ""},
		{"as nix copy writes it", "StoreDir: /nix/store\n", ""},
		{"no mass query", "StoreDir: /nix/store\nWantMassQuery: 0\n", ""},
		{"other priority", "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n", "give --priority 40"},
		{"other store", "StoreDir: /gnu/store\nWantMassQuery: 1\nPriority: 50\n", "is for store /gnu/store"},
		{"bad priority", "StoreDir: /nix/store\nPriority: high\n", `Priority: "high" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(tt.info), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Publish(t.Context(), newSource(t, sk, upSK), openFile(t, dir), Options{Key: pk})
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Publish: %v, want an error saying %q", err, tt.want)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "nix-cache-info"))
			if string(got) != tt.info {
				t.Errorf("nix-cache-info rewritten to %q", got)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	for _, url := range []string{
		"http://example.com/cache",
		"file://host/dir",
		"file:relative",
		"file:///dir?compression=xz",
		"s3://bucket/path?endpoint=http://127.0.0.1:1",
		"s3://bucket?endpoint=http://127.0.0.1:1&bogus=1",
		"s3://bucket?endpoint=ftp://127.0.0.1:1",
	} {
		if d, err := Open(t.Context(), url, ""); err == nil {
			d.Close()
			t.Errorf("Open(%q) succeeded", url)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := Publish(ctx, nil, nil, Options{Compression: "bzip2"}); err == nil || !strings.Contains(err.Error(), "zstd, xz, none") {
		t.Errorf("compression bzip2: %v", err)
	}
}
