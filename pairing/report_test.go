package pairing

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/classify"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/platform"
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

// exampleSpecs is the package set of exampleStore, native names.
var exampleSpecs = []spec{
	{key: "glibc", name: "glibc-2.36"},
	{key: "libbase", name: "libbase-2.0", outputs: []string{"out", "dev"}, inputs: []string{"glibc"}},
	{key: "data", name: "greet-data-1.0"},
	{key: "src", name: "hello-2.12.c", fod: true},
	{key: "hello", name: "hello-2.12", inputs: []string{"libbase:dev,out", "glibc", "data", "src"}},
	{key: "bash", name: "bash-5.2"},
	{key: "leaky", name: "hello-bash-wrapper-1.0", inputs: []string{"bash", "hello"}},
}

// exampleStore holds a small cross build: hello (aarch64) linking libbase
// and glibc, a data package, a build-platform bash (x86_64) and a script
// whose shebang names that bash.
func exampleStore(t *testing.T) (*memStore, *testGraph, *testGraph) {
	t.Helper()
	n, c := sides(t, exampleSpecs, "data", "bash", "leaky")
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
			// Each entry records why it was made: the report's reason,
			// which the goldens check.
			reasons := map[string]string{}
			for _, p := range rep.Paths {
				reasons[p.Cross] = p.PairedBy
			}
			got := rep.Mapping.Entries()
			for i, e := range got {
				if e.PairedBy == "" || e.PairedBy != reasons[e.Cross] {
					t.Errorf("entry of %s records paired by %q, the report says %q", e.Native, e.PairedBy, reasons[e.Cross])
				}
				got[i].PairedBy = ""
			}
			if !reflect.DeepEqual(got, want.Entries()) {
				t.Errorf("mapping =\n%v\nwant\n%v", got, want.Entries())
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
			// and says again why map paired each path.
			for _, p := range crep.Paths {
				if p.Native == "" {
					continue
				}
				if want := reasons[p.Cross] + " (as recorded in the mapping file)"; p.PairedBy != want {
					t.Errorf("check: %s paired by %q, want %q", p.Cross, p.PairedBy, want)
				}
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
	if _, err := Map(ctx, s, []Root{{Native: n.drv["hello"], Cross: c.drv["missing"]}}, Options{}); err == nil || !strings.Contains(err.Error(), "cross graph: load derivations: read derivation : not a .drv path") {
		t.Errorf("Map with an empty cross root: %v", err)
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

// TestHostPreferredOverBuildPlatform: with the build-platform option, an
// x86_64 bash (a shebang) and the aarch64 bash both pair with native bash;
// the host one is served whatever the hash order.
func TestHostPreferredOverBuildPlatform(t *testing.T) {
	for _, hostKey := range []string{"ba0", "ba1", "ba2", "ba3"} {
		t.Run(hostKey, func(t *testing.T) {
			n := graphOf(t, "native", []spec{
				{key: "bash", name: "bash-5.2"},
				{key: "foo", name: "foo-1.0", inputs: []string{"bash"}, env: map[string]string{"nativeBuildInputs": "{bash.out}", "buildInputs": "{bash.out}"}},
			})
			c := graphOf(t, "cross", []spec{
				{key: "bx", name: "bash-5.2"},
				{key: hostKey, name: "bash-" + suffix + "-5.2"},
				{key: "foo", name: "foo-" + suffix + "-1.0", inputs: []string{"bx", hostKey}, env: map[string]string{"nativeBuildInputs": "{bx.out}", "buildInputs": "{" + hostKey + ".out}"}},
			})
			s := newMemStore()
			s.addDrvs(t, n)
			s.addDrvs(t, c)
			bx, ba, foo := c.out["bx"]["out"], c.out[hostKey]["out"], c.out["foo"]["out"]
			s.addPath(t, bx, nil, "", file{path: "/", data: elfHeader(elf.EM_X86_64, "")})
			s.addPath(t, ba, nil, "", file{path: "/", data: elfHeader(elf.EM_AARCH64, "")})
			s.addPath(t, foo, []string{bx, ba}, "", file{path: "/", data: []byte("#!" + bx + "\nexec " + ba + "\n")})
			rep, err := Map(context.Background(), s, []Root{{Native: n.drv["foo"], Cross: c.drv["foo"]}}, Options{AllowBuildPlatform: true})
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := rep.Mapping.ByNative(n.out["bash"]["out"]); !ok || e.Cross != ba {
				t.Fatalf("native bash served from %q, want the aarch64 bash %s; problems %q", e.Cross, ba, rep.Problems)
			}
			want := bx + ": its native path " + n.out["bash"]["out"] + " is served from the host path " + ba + " instead"
			if !slices.Contains(rep.Problems, want) {
				t.Errorf("problems %q, want %q", rep.Problems, want)
			}
		})
	}
}

// TestHostSuffixOutranksBuildELF: a host package may carry build-platform
// ELF files as data (Go's debug/elf test files); its host suffix keeps it
// host, and the report names the files.
func TestHostSuffixOutranksBuildELF(t *testing.T) {
	n := graphOf(t, "native", []spec{{key: "go", name: "go-1.22"}})
	c := graphOf(t, "cross", []spec{{key: "go", name: "go-" + suffix + "-1.22"}})
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	s.addPath(t, c.out["go"]["out"], nil, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/go", data: elfHeader(elf.EM_AARCH64, "")},
		file{path: "/share", dir: true},
		file{path: "/share/x86-64.obj", data: elfHeader(elf.EM_X86_64, "")})
	rep, err := Map(context.Background(), s, []Root{{Native: n.drv["go"], Cross: c.drv["go"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mapping.Len() != 1 || !rep.OK() {
		t.Fatalf("host-suffixed go not mapped: %+v; problems %q", rep.Paths, rep.Problems)
	}
	want := "host suffix in its name; aarch64 ELF in /bin/go, x86_64 ELF in /share/x86-64.obj"
	if rep.Paths[0].Class != Host || rep.Paths[0].Why != want {
		t.Errorf("class %v, why %q; want host, %q", rep.Paths[0].Class, rep.Paths[0].Why, want)
	}
	// The files are pointed out all the same: a build-platform tool
	// installed by mistake looks the same.
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], c.out["go"]["out"]+" is a host path but holds x86_64 ELF in /share/x86-64.obj") {
		t.Errorf("notes %q, want one naming the x86_64 file", rep.Notes)
	}
}

// TestLeakInEntryName: Nix records a reference found in an entry name;
// the leak it makes is reported, with the entry.
func TestLeakInEntryName(t *testing.T) {
	n := graphOf(t, "native", []spec{{key: "bash", name: "bash-5.2"}, {key: "foo", name: "foo-1.0", inputs: []string{"bash"}, env: map[string]string{"nativeBuildInputs": "{bash.out}"}}})
	c := graphOf(t, "cross", []spec{{key: "bash", name: "bash-5.2"}, {key: "foo", name: "foo-" + suffix + "-1.0", inputs: []string{"bash"}, env: map[string]string{"nativeBuildInputs": "{bash.out}"}}})
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	bx := c.out["bash"]["out"]
	s.addPath(t, bx, nil, "", file{path: "/", data: elfHeader(elf.EM_X86_64, "")})
	s.addPath(t, c.out["foo"]["out"], []string{bx}, "",
		file{path: "/", dir: true}, file{path: "/share", dir: true}, file{path: "/share/" + path.Base(bx), data: []byte("x")})
	rep, err := Map(context.Background(), s, []Root{{Native: n.drv["foo"], Cross: c.drv["foo"]}}, Options{AllowBuildPlatform: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Leaks) != 1 || rep.Leaks[0].To != bx || fmt.Sprint(rep.Leaks[0].Files.Names) != "[/share/"+path.Base(bx)+"]" {
		t.Fatalf("leaks %+v, want foo -> %s in /share/%s", rep.Leaks, bx, path.Base(bx))
	}
}

// TestClassOfForeignMachines: i686 code belongs to the build platform's
// family; other machines are named, not reported as "no ELF files".
func TestClassOfForeignMachines(t *testing.T) {
	pl := testPlatforms(t, "aarch64-linux", "x86_64-linux", suffix)
	tests := []struct {
		elf       platform.ELF
		wantClass Class
		wantWhy   string
	}{
		{platform.ELF{Machine: elf.EM_386, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}, Build, "i686 ELF in /lib/ld-linux.so.2"},
		{platform.ELF{Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}, Neutral, "no host (aarch64) or build-platform (x86_64, i686) ELF files, but armv6l/armv7l ELF in /lib/ld-linux.so.2"},
	}
	for _, tt := range tests {
		res := &classify.Result{Machines: map[platform.ELF]*classify.Files{tt.elf: {Names: []string{"/lib/ld-linux.so.2"}, Count: 1}}}
		class, why := classOf(storePath("x", "glibc-2.38-32"), res, pl, nil, nil)
		if class != tt.wantClass || why != tt.wantWhy {
			t.Errorf("%v: class %v, why %q; want %v, %q", tt.elf, class, why, tt.wantClass, tt.wantWhy)
		}
	}
}
