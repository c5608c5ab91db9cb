package pairing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// countingSource records what reaches the fallback.
type countingSource struct {
	src   DrvSource
	reads atomic.Int64
}

func (c *countingSource) ReadDerivation(ctx context.Context, p string) (*derivation.Derivation, error) {
	c.reads.Add(1)
	return c.src.ReadDerivation(ctx, p)
}

// smallGen is a graph small enough for unit tests but with every feature
// of the benchmark's.
var smallGen = genSpec{packages: 300, width: 30, tools: 20, sources: 75}

func TestDrvPathMatchesNix(t *testing.T) {
	dir := t.TempDir()
	r := genDrvDir(t, dir, smallGen)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != r.files || r.files == 0 {
		t.Fatalf("%d files in %s, want %d", len(ents), dir, r.files)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		d, err := derivation.ReadDerivation(strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		want, err := d.DrvPath()
		if err != nil {
			t.Fatal(err)
		}
		if got := drvPathOf(d, b); got != want || filepath.Base(got) != e.Name() {
			t.Fatalf("drvPathOf(%s) = %s, want %s", e.Name(), got, want)
		}
	}
}

func TestDirSource(t *testing.T) {
	dir := t.TempDir()
	r := genDrvDir(t, dir, smallGen)
	orig, err := os.ReadFile(filepath.Join(dir, filepath.Base(r.cross)))
	if err != nil {
		t.Fatal(err)
	}
	// The upstream has every derivation, as a daemon would.
	up := newMemStore()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		up.addPath(t, "/nix/store/"+e.Name(), nil, "", file{path: "/", data: b})
	}
	tampered := strings.Replace(string(orig), "make -j", "make -k -j", 1)
	if tampered == string(orig) {
		t.Fatal("nothing to tamper with")
	}
	tests := []struct {
		name         string
		path         string
		setup        func(t *testing.T, file string) // changes the file in dir
		fallback     bool
		wantFallback bool
		wantErr      string
	}{
		{name: "file that hashes to its path", path: r.cross, fallback: true},
		{name: "missing file", path: r.cross, fallback: true, wantFallback: true,
			setup: func(t *testing.T, f string) { mustRemove(t, f) }},
		{name: "edited file", path: r.cross, fallback: true, wantFallback: true,
			setup: func(t *testing.T, f string) { mustWrite(t, f, tampered) }},
		{name: "truncated file", path: r.cross, fallback: true, wantFallback: true,
			setup: func(t *testing.T, f string) { mustWrite(t, f, string(orig[:len(orig)/2])) }},
		{name: "directory", path: r.cross, fallback: true, wantFallback: true,
			setup: func(t *testing.T, f string) { mustRemove(t, f); mustMkdir(t, f) }},
		{name: "too large", path: r.cross, fallback: true, wantFallback: true,
			setup: func(t *testing.T, f string) {
				if err := os.Truncate(f, MaxDrvSize+1); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "edited file, no fallback", path: r.cross, wantErr: "hashes to /nix/store/",
			setup: func(t *testing.T, f string) { mustWrite(t, f, tampered) }},
		{name: "missing file, no fallback", path: r.cross, wantErr: "no such file",
			setup: func(t *testing.T, f string) { mustRemove(t, f) }},
		{name: "missing file, not in the upstream either", path: storePath("gone", "gone-1.0.drv"), fallback: true, wantFallback: true,
			wantErr: "is not valid"},
		{name: "not a derivation path", path: strings.TrimSuffix(r.cross, ".drv"), fallback: true, wantErr: "not a .drv path"},
		{name: "outside the store", path: "/etc/" + filepath.Base(r.cross), fallback: true, wantErr: "read derivation /etc/"},
		{name: "not plain", path: storePath("a", "a") + "/../" + filepath.Base(r.cross), fallback: true, wantErr: "not a plain store path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(dir, filepath.Base(r.cross))
			defer func() { mustRemoveAll(t, f); mustWrite(t, f, string(orig)) }()
			if tt.setup != nil {
				tt.setup(t, f)
			}
			fb := &countingSource{src: StoreSource{Store: up}}
			src := DirSource{Dir: dir}
			if tt.fallback {
				src.Fallback = fb
			}
			d, err := src.ReadDerivation(context.Background(), tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.path) {
					t.Fatalf("err = %v, want one naming %s and containing %q", err, tt.path, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if got := drvPathOf(d, orig); got != tt.path {
				t.Fatalf("read a derivation that is %s, want %s", got, tt.path)
			}
			if got := fb.reads.Load() > 0; got != tt.wantFallback {
				t.Errorf("fallback used: %v, want %v", got, tt.wantFallback)
			}
		})
	}
}

func TestLoadGraphSources(t *testing.T) {
	dir := t.TempDir()
	r := genDrvDir(t, dir, smallGen)
	up := newMemStore()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		up.addPath(t, "/nix/store/"+e.Name(), nil, "", file{path: "/", data: b})
	}
	ctx := context.Background()
	want, err := LoadGraph(ctx, StoreSource{Store: up}, r.cross)
	if err != nil {
		t.Fatal(err)
	}
	if want.Len() != r.crossDrvs {
		t.Fatalf("cross graph through the store has %d derivations, want %d", want.Len(), r.crossDrvs)
	}
	// Half the files gone: those come through the fallback, and the graph
	// is the same.
	for i, e := range ents {
		if i%2 == 0 {
			mustRemove(t, filepath.Join(dir, e.Name()))
		}
	}
	fb := &countingSource{src: StoreSource{Store: up}}
	for range 3 {
		got, err := LoadGraph(ctx, DirSource{Dir: dir, Fallback: fb}, r.cross)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := strings.Join(sortedDrvPaths(got), "\n"), strings.Join(sortedDrvPaths(want), "\n"); g != w {
			t.Fatal("graph read from the directory differs from the one read through the store")
		}
		for _, p := range sortedDrvPaths(want) {
			wd, _ := want.Derivation(p)
			gd, _ := got.Derivation(p)
			if drvPathOf(gd, mustEncode(t, gd)) != drvPathOf(wd, mustEncode(t, wd)) {
				t.Fatalf("derivation %s differs", p)
			}
		}
	}
	if n := fb.reads.Load(); n == 0 || n >= int64(3*r.crossDrvs) {
		t.Errorf("fallback read %d derivations for 3 loads of %d with half the files gone", n, r.crossDrvs)
	}

	// Without a fallback, the error is the same whatever the order reads
	// finish in: the first missing derivation by path.
	var first string
	for i := 0; i < 5; i++ {
		_, err := LoadGraph(ctx, DirSource{Dir: dir}, r.cross, r.native)
		if err == nil || !strings.Contains(err.Error(), "more derivations that cannot be read") {
			t.Fatalf("LoadGraph with files missing: %v", err)
		}
		if i == 0 {
			first = err.Error()
		} else if err.Error() != first {
			t.Fatalf("errors differ between runs:\n%s\n%s", first, err)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LoadGraph(cctx, StoreSource{Store: up}, r.cross); !errors.Is(err, context.Canceled) {
		t.Errorf("LoadGraph with a cancelled context: %v", err)
	}
}

func mustEncode(t *testing.T, d *derivation.Derivation) []byte {
	t.Helper()
	var b strings.Builder
	if err := d.WriteDerivation(&b); err != nil {
		t.Fatal(err)
	}
	return []byte(b.String())
}

func mustWrite(t *testing.T, f, s string) {
	t.Helper()
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, f string) {
	t.Helper()
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
}

func mustRemoveAll(t *testing.T, f string) {
	t.Helper()
	if err := os.RemoveAll(f); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, f string) {
	t.Helper()
	if err := os.Mkdir(f, 0o755); err != nil {
		t.Fatal(err)
	}
}

// FuzzDirSource: any bytes that parse as a derivation are read back from
// the path they hash to, and from no other.
func FuzzDirSource(f *testing.F) {
	f.Add([]byte(`Derive([("out","/nix/store/00000000000000000000000000000000-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("name","a"),("out","/nix/store/00000000000000000000000000000000-a")])`))
	f.Add([]byte("Derive("))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		d, err := derivation.ReadDerivation(strings.NewReader(string(b)))
		if err != nil || d.Name() == "" {
			return
		}
		p := drvPathOf(d, b)
		if _, err := checkDrvPath(p); err != nil {
			return // a name Nix would not accept
		}
		mustWrite(t, filepath.Join(dir, filepath.Base(p)), string(b))
		got, err := DirSource{Dir: dir}.ReadDerivation(context.Background(), p)
		if err != nil {
			t.Fatalf("read %s back: %v", p, err)
		}
		if got.Name() != d.Name() {
			t.Fatalf("read %q back, want %q", got.Name(), d.Name())
		}
		other := storePath("other", d.Name()+".drv")
		mustWrite(t, filepath.Join(dir, filepath.Base(other)), string(b))
		if _, err := (DirSource{Dir: dir}).ReadDerivation(context.Background(), other); err == nil {
			t.Fatalf("%s read from a file that hashes to %s", other, p)
		}
	})
}

// BenchmarkLoadAndPair20000 loads two graphs of about 20,000 derivations
// each from .drv files, as map does from /nix/store, and pairs them.
func BenchmarkLoadAndPair20000(b *testing.B) {
	dir := b.TempDir()
	r := genDrvDir(b, dir, genSpec{packages: 15000, width: 200, tools: 1000, sources: 3750})
	b.Logf("%d .drv files; %d native and %d cross derivations", r.files, r.nativeDrvs, r.crossDrvs)
	src := DirSource{Dir: dir}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		n, err := LoadGraph(ctx, src, r.native)
		if err != nil {
			b.Fatal(err)
		}
		c, err := LoadGraph(ctx, src, r.cross)
		if err != nil {
			b.Fatal(err)
		}
		if n.Len() != r.nativeDrvs || c.Len() != r.crossDrvs {
			b.Fatalf("loaded %d and %d derivations, want %d and %d", n.Len(), c.Len(), r.nativeDrvs, r.crossDrvs)
		}
		p, err := Pair(n, c, []Root{{Native: r.native, Cross: r.cross}}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if p.Len() != r.hostPackages {
			b.Fatalf("paired %d derivations, want %d", p.Len(), r.hostPackages)
		}
	}
}
