package pairing

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/mapping"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// elfHeader is the start of an ELF file for machine m: what classification
// reads.
func elfHeader(m elf.Machine, rest string) []byte {
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.LittleEndian.PutUint16(h[16:], uint16(elf.ET_DYN))
	binary.LittleEndian.PutUint16(h[18:], uint16(m))
	return append(h, rest...)
}

// exampleStore holds a small cross build: hello (aarch64) linking libbase
// and glibc, a data package, a build-platform bash (x86_64) and a script
// whose shebang names that bash.
func exampleStore(t *testing.T) (*memStore, *testGraph, *testGraph) {
	t.Helper()
	specs := []spec{
		{key: "glibc", name: "glibc-2.36"},
		{key: "libbase", name: "libbase-2.0", outputs: []string{"out", "dev"}, inputs: []string{"glibc"}},
		{key: "data", name: "greet-data-1.0"},
		{key: "src", name: "hello-2.12.c", fod: true},
		{key: "hello", name: "hello-2.12", inputs: []string{"libbase:dev,out", "glibc", "data", "src"}},
		{key: "bash", name: "bash-5.2"},
		{key: "leaky", name: "hello-bash-wrapper-1.0", inputs: []string{"bash", "hello"}},
	}
	n, c := sides(t, specs, "data", "bash", "leaky")
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	o := func(k, out string) string { return c.out[k][out] }
	s.addPath(t, o("glibc", "out"), []string{o("glibc", "out")}, "",
		file{path: "/", dir: true}, file{path: "/lib", dir: true},
		file{path: "/lib/libc.so.6", data: elfHeader(elf.EM_AARCH64, o("glibc", "out"))})
	s.addPath(t, o("libbase", "out"), []string{o("glibc", "out")}, "",
		file{path: "/", dir: true}, file{path: "/lib", dir: true},
		file{path: "/lib/libbase.so.2", data: elfHeader(elf.EM_AARCH64, "RUNPATH="+o("glibc", "out")+"/lib")})
	s.addPath(t, o("libbase", "dev"), []string{o("libbase", "out")}, "",
		file{path: "/", dir: true}, file{path: "/lib", dir: true},
		file{path: "/lib/libbase.so", target: o("libbase", "out") + "/lib/libbase.so.2"})
	s.addPath(t, o("data", "out"), nil, "", file{path: "/", data: []byte("greetings")})
	s.addPath(t, o("src", "out"), nil, "fixed:sha256:"+strings.Repeat("0", 52), file{path: "/", data: []byte("int main;")})
	s.addPath(t, o("hello", "out"), []string{o("hello", "out"), o("libbase", "out"), o("glibc", "out"), o("data", "out")}, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/hello", data: elfHeader(elf.EM_AARCH64, o("glibc", "out")+" "+o("libbase", "out")+" "+o("data", "out")+" "+o("hello", "out"))})
	s.addPath(t, o("bash", "out"), nil, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/bash", data: elfHeader(elf.EM_X86_64, "")})
	s.addPath(t, o("leaky", "out"), []string{o("bash", "out"), o("hello", "out")}, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/hello-bash-wrapper", data: []byte("#!" + o("bash", "out") + "/bin/bash\nexec " + o("hello", "out") + "/bin/hello\n")})
	return s, n, c
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (err %v)\ngot:\n%s\nregenerate with: go test ./pairing -run %s -update", path, err, got, t.Name())
	}
}

func TestMapAndCheck(t *testing.T) {
	s, n, c := exampleStore(t)
	roots := []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}, {Native: n.drv["leaky"], Cross: c.drv["leaky"]}}
	entry := func(k, o string) mapping.Entry {
		return mapping.Entry{Native: n.out[k][o], Cross: c.out[k][o], Deriver: n.drv[k], Output: o}
	}
	hostEntries := []mapping.Entry{entry("glibc", "out"), entry("libbase", "out"), entry("data", "out"), entry("hello", "out"), entry("leaky", "out")}
	tests := []struct {
		name       string
		opts       Options
		entries    []mapping.Entry
		leakMapped bool
		problems   []string // substrings, one per problem, in order
		golden     string
	}{
		{
			name:     "build-platform bash left out and reported",
			entries:  hostEntries,
			problems: []string{c.out["bash"]["out"] + ": build-platform path"},
			golden:   "map.txt",
		},
		{
			name:       "build-platform bash paired by name when allowed",
			opts:       Options{AllowBuildPlatform: true},
			entries:    append(hostEntries, entry("bash", "out")),
			leakMapped: true,
			golden:     "map-allow-build.txt",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			rep, err := Map(ctx, s, roots, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			want, err := mapping.New(tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(rep.Mapping.Entries(), want.Entries()) {
				t.Errorf("mapping =\n%v\nwant\n%v", rep.Mapping.Entries(), want.Entries())
			}
			checkProblems(t, rep.Problems, tt.problems)
			checkLeak(t, rep, c.out["leaky"]["out"], c.out["bash"]["out"], n.drv["bash"], tt.leakMapped)
			for _, p := range rep.Paths {
				wantClass := map[string]Class{c.out["bash"]["out"]: Build, c.out["data"]["out"]: Neutral, c.out["leaky"]["out"]: Neutral}[p.Cross]
				if _, special := map[string]bool{c.out["bash"]["out"]: true, c.out["data"]["out"]: true, c.out["leaky"]["out"]: true}[p.Cross]; !special {
					wantClass = Host
				}
				if p.Class != wantClass {
					t.Errorf("%s: class %v (%s), want %v", p.Cross, p.Class, p.Why, wantClass)
				}
			}
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tt.golden, text.Bytes())

			// Check on what Map wrote sees the same.
			crep, err := Check(ctx, s, rep.Mapping, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkLeak(t, crep, c.out["leaky"]["out"], c.out["bash"]["out"], n.drv["bash"], tt.leakMapped)
			var cp []string
			for _, p := range tt.problems {
				cp = append(cp, strings.Replace(p, ": build-platform path", ": input-addressed and not in the mapping", 1))
			}
			checkProblems(t, crep.Problems, cp)
			if len(crep.Paths) != len(rep.Paths) {
				t.Errorf("check saw %d paths, map %d", len(crep.Paths), len(rep.Paths))
			}
		})
	}
}

func checkProblems(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("problems = %q, want %d matching %q", got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("problem %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func checkLeak(t *testing.T, rep *Report, from, to, nativeDrv string, mapped bool) {
	t.Helper()
	want := []Leak{{From: from, To: to, Native: []string{nativeDrv}, Mapped: mapped}}
	want[0].Files.Names = []string{"/bin/hello-bash-wrapper"}
	want[0].Files.Count = 1
	if !reflect.DeepEqual(rep.Leaks, want) {
		t.Errorf("leaks = %+v, want %+v", rep.Leaks, want)
	}
}

func TestCheckProblems(t *testing.T) {
	s, n, c := exampleStore(t)
	ctx := context.Background()
	entry := func(k, o string) mapping.Entry {
		return mapping.Entry{Native: n.out[k][o], Cross: c.out[k][o], Deriver: n.drv[k], Output: o}
	}
	notBuilt := entry("libbase", "dev")
	delete(s.infos, notBuilt.Cross)
	wrongOutput := entry("glibc", "out")
	wrongOutput.Native = n.out["data"]["out"]
	tests := []struct {
		name     string
		entries  []mapping.Entry
		problems []string
	}{
		{"missing dependency", []mapping.Entry{entry("hello", "out"), entry("glibc", "out"), entry("data", "out")},
			[]string{c.out["libbase"]["out"] + ": input-addressed and not in the mapping"}},
		{"cross path not built", []mapping.Entry{notBuilt},
			[]string{notBuilt.Cross + ": not valid in the upstream store"}},
		{"native path is not the deriver's output", []mapping.Entry{wrongOutput},
			[]string{"is not output \"out\" of its deriver " + n.drv["glibc"]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := mapping.New(tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Check(ctx, s, m, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkProblems(t, rep.Problems, tt.problems)
		})
	}
}

func TestMapErrors(t *testing.T) {
	s, n, c := exampleStore(t)
	ctx := context.Background()
	if _, err := Map(ctx, s, []Root{{Native: n.drv["hello"], Cross: c.drv["missing"]}}, Options{}); err == nil {
		t.Error("Map with an empty cross root succeeded")
	}
	bogus := storePath("bogus", "bogus-1.0.drv")
	if _, err := Map(ctx, s, []Root{{Native: n.drv["hello"], Cross: bogus}}, Options{}); err == nil || !strings.Contains(err.Error(), bogus) {
		t.Errorf("Map with a cross root not in the store: %v", err)
	}
	// A corrupt .drv is an error naming it, not a panic.
	s.addPath(t, bogus, nil, "", file{path: "/", data: []byte("Derive([(\"out\"")})
	if _, err := Map(ctx, s, []Root{{Native: n.drv["hello"], Cross: bogus}}, Options{}); err == nil || !strings.Contains(err.Error(), "read derivation "+bogus) {
		t.Errorf("Map with a corrupt cross root: %v", err)
	}
}

func FuzzReadDerivation(f *testing.F) {
	f.Add([]byte(`Derive([("out","/nix/store/00000000000000000000000000000000-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("name","a"),("out","/nix/store/00000000000000000000000000000000-a")])`))
	f.Add([]byte("Derive("))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newMemStore()
		p := storePath("fuzz", "fuzz.drv")
		s.addPath(t, p, nil, "", file{path: "/", data: b})
		d, err := ReadDerivation(context.Background(), s, p)
		if err == nil && d == nil {
			t.Fatal("nil derivation without error")
		}
	})
}
