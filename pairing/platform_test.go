package pairing

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/classify"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/platform"
)

func testPlatforms(t *testing.T, host, build, marker string) platforms {
	t.Helper()
	h, err := platform.Lookup(host)
	if err != nil {
		t.Fatal(err)
	}
	b, err := platform.Lookup(build)
	if err != nil {
		t.Fatal(err)
	}
	return platforms{host: h, build: b, marker: marker}
}

// realELF reads an executable of testdata/elf (see build.sh there) and
// appends extra, as a linker leaves RUNPATHs and strings after the code.
func realELF(t *testing.T, arch, extra string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "elf", "hello-"+arch))
	if err != nil {
		t.Fatal(err)
	}
	return append(b, "\x00"+extra...)
}

// onSystem gives every derivation of g the system s, as if instantiated
// for it; call it before storing g's .drv files.
func onSystem(g *testGraph, s string) *testGraph {
	for _, d := range g.drvs {
		d.Platform = s
	}
	return g
}

// reverseStore is an x86_64 package set cross-built on an aarch64 machine:
// every host file is x86_64, and the build-platform bash a script leaks is
// aarch64. firmware has no host suffix (a runCommand bundle), so only its
// ELF files say it is host.
func reverseStore(t *testing.T) (*memStore, *testGraph, *testGraph) {
	t.Helper()
	const sfx = "x86_64-unknown-linux-gnu"
	bashEnv := map[string]string{"nativeBuildInputs": "{bash.out}", "buildInputs": "{hello.out}"}
	n := onSystem(graphOf(t, "native", []spec{
		{key: "glibc", name: "glibc-2.40"},
		{key: "firmware", name: "firmware-bundle"},
		{key: "hello", name: "hello-2.12", inputs: []string{"glibc", "firmware"}},
		{key: "bash", name: "bash-5.2"},
		{key: "leaky", name: "hello-wrapper-1.0", inputs: []string{"bash", "hello"}, env: bashEnv},
	}), "x86_64-linux")
	c := onSystem(graphOf(t, "cross", []spec{
		{key: "glibc", name: "glibc-" + sfx + "-2.40"},
		{key: "firmware", name: "firmware-bundle"},
		{key: "hello", name: "hello-" + sfx + "-2.12", inputs: []string{"glibc", "firmware"}},
		{key: "bash", name: "bash-5.2"},
		{key: "leaky", name: "hello-wrapper-" + sfx + "-1.0", inputs: []string{"bash", "hello"}, env: bashEnv},
	}), "aarch64-linux")
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	o := func(k string) string { return c.out[k]["out"] }
	s.addPath(t, o("glibc"), []string{o("glibc")}, "",
		file{path: "/", dir: true}, file{path: "/lib", dir: true},
		file{path: "/lib/libc.so.6", data: realELF(t, "x86_64", o("glibc"))})
	s.addPath(t, o("firmware"), nil, "",
		file{path: "/", dir: true}, file{path: "/lib", dir: true},
		file{path: "/lib/loader", data: realELF(t, "x86_64", "")})
	s.addPath(t, o("hello"), []string{o("glibc"), o("firmware")}, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/hello", data: realELF(t, "x86_64", o("glibc")+"/lib "+o("firmware"))})
	s.addPath(t, o("bash"), nil, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/bash", data: realELF(t, "aarch64", "")})
	s.addPath(t, o("leaky"), []string{o("bash"), o("hello")}, "",
		file{path: "/", dir: true}, file{path: "/bin", dir: true},
		file{path: "/bin/hello-wrapper", data: []byte("#!" + o("bash") + "/bin/bash\nexec " + o("hello") + "/bin/hello\n")})
	// As a daemon would say: check reads the cross graph through them.
	for k := range c.drv {
		s.infos[o(k)].Deriver = c.drv[k]
	}
	return s, n, c
}

// classes returns the class and why of every path of rep, by cross path.
func classes(rep *Report) map[string]string {
	out := map[string]string{}
	for _, p := range rep.Paths {
		out[p.Cross] = p.Class.String() + ": " + p.Why
	}
	return out
}

// TestReverseDirection: x86_64 packages cross-built on aarch64. Every
// host file is x86_64 and must be taken for host code, the aarch64 bash
// for the build platform, whether the platforms come from the roots (map),
// the mapping file or the derivers (check).
func TestReverseDirection(t *testing.T) {
	s, n, c := reverseStore(t)
	ctx := context.Background()
	o := func(k string) string { return c.out[k]["out"] }
	wantClasses := map[string]string{
		o("glibc"):    "host: x86_64 ELF in /lib/libc.so.6",
		o("firmware"): "host: x86_64 ELF in /lib/loader",
		o("hello"):    "host: x86_64 ELF in /bin/hello",
		o("bash"):     "build-platform: aarch64 ELF in /bin/bash",
		o("leaky"):    "host: host suffix in its name",
	}
	rep, err := Map(ctx, s, []Root{{Native: n.drv["leaky"], Cross: c.drv["leaky"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := classes(rep); !reflect.DeepEqual(got, wantClasses) {
		t.Errorf("map classes:\n%v\nwant\n%v", got, wantClasses)
	}
	if m := rep.Mapping; m.HostSystem() != "x86_64-linux" || m.BuildSystem() != "aarch64-linux" || m.Len() != 4 {
		t.Errorf("mapping: host %q, build %q, %d entries; want x86_64-linux, aarch64-linux, 4", m.HostSystem(), m.BuildSystem(), m.Len())
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes %q", rep.Notes)
	}
	checkProblems(t, rep.Problems, []string{o("bash") + ": build-platform path"})
	wantLeaks := []Leak{{From: o("leaky"), To: o("bash"), Files: classify.Files{Names: []string{"/bin/hello-wrapper"}, Count: 1}, Native: []string{n.drv["bash"]}}}
	if !reflect.DeepEqual(rep.Leaks, wantLeaks) {
		t.Errorf("leaks %+v, want %+v", rep.Leaks, wantLeaks)
	}

	// What check sees, with the platforms recorded and without.
	bare, err := mapping.New(rep.Mapping.Entries())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		m     *mapping.Mapping
		notes []string
	}{
		{"recorded", rep.Mapping, nil},
		{"inferred", bare, []string{
			"the mapping does not record its host system: x86_64-linux, the system of its native derivations",
			"the mapping does not record its build system: aarch64-linux, the system of its cross derivations",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			crep, err := Check(ctx, s, tt.m, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := classes(crep); !reflect.DeepEqual(got, wantClasses) {
				t.Errorf("check classes:\n%v\nwant\n%v", got, wantClasses)
			}
			if !reflect.DeepEqual(crep.Leaks, wantLeaks) {
				t.Errorf("leaks %+v, want %+v", crep.Leaks, wantLeaks)
			}
			if !reflect.DeepEqual(crep.Notes, tt.notes) {
				t.Errorf("notes %q, want %q", crep.Notes, tt.notes)
			}
		})
	}

	// With the platforms this project once assumed, the unsuffixed
	// x86_64 firmware is taken for a build-platform path.
	crep, err := Check(ctx, s, rep.Mapping, Options{HostSystem: "aarch64-linux", BuildSystem: "x86_64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	if got := classes(crep)[o("firmware")]; got != "build-platform: x86_64 ELF in /lib/loader" {
		t.Errorf("firmware under the old constants: %q", got)
	}
}

// TestMapPlatforms: where map takes the platforms from, and what it says
// when the data disagree.
func TestMapPlatforms(t *testing.T) {
	s, n, c := exampleStore(t)
	ctx := context.Background()
	hello := Root{Native: n.drv["hello"], Cross: c.drv["hello"]}

	rep, err := Map(ctx, s, []Root{hello}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m := rep.Mapping; m.HostSystem() != "aarch64-linux" || m.BuildSystem() != "x86_64-linux" {
		t.Errorf("systems %q, %q; want aarch64-linux, x86_64-linux from the roots", m.HostSystem(), m.BuildSystem())
	}

	// A native graph instantiated for x86_64 by mistake: the suffix says
	// aarch64, the x86_64 glibc looks like a build-platform leak.
	wrong := newMemStore()
	for p, i := range s.infos {
		wrong.infos[p], wrong.nars[p] = i, s.nars[p]
	}
	nx := onSystem(graphOf(t, "native", exampleSpecs), "x86_64-linux")
	wrong.addDrvs(t, nx)
	rep, err = Map(ctx, wrong, []Root{{Native: nx.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := "host suffix " + suffix + " is a config of aarch64-linux, but the host system is x86_64-linux: native and cross paths are for different platforms"
	if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
		t.Errorf("problems %q, want one starting %q", rep.Problems, want)
	}
	// An override wins over the roots.
	rep, err = Map(ctx, wrong, []Root{{Native: nx.drv["hello"], Cross: c.drv["hello"]}}, Options{HostSystem: "aarch64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mapping.HostSystem() != "aarch64-linux" || !rep.OK() {
		t.Errorf("with --host-system: host %q, problems %q", rep.Mapping.HostSystem(), rep.Problems)
	}

	// withSystems is s with the native graph's derivations of keys on
	// another system.
	withSystems := func(system string, keys ...string) (*memStore, *testGraph) {
		st := newMemStore()
		for p, i := range s.infos {
			st.infos[p], st.nars[p] = i, s.nars[p]
		}
		g := graphOf(t, "native", exampleSpecs)
		for _, k := range keys {
			g.drvs[g.drv[k]].Platform = system
		}
		st.addDrvs(t, g)
		return st, g
	}
	mixed, _ := withSystems("x86_64-linux", "data")
	darwin, _ := withSystems("aarch64-darwin", "hello")
	errTests := []struct {
		name    string
		store   *memStore
		roots   []Root
		opts    Options
		wantErr string
	}{
		{"roots disagree", mixed, []Root{hello, {Native: n.drv["data"], Cross: c.drv["data"]}}, Options{},
			"host system: the roots disagree (" + n.drv["data"] + " is for x86_64-linux, " + n.drv["hello"] + " for aarch64-linux)"},
		{"unknown override", s, []Root{hello}, Options{BuildSystem: "sparc64-linux"},
			`build system: system "sparc64-linux" is not one decross-store knows (known: aarch64-linux, armv6l-linux`},
		{"unknown system", darwin, []Root{hello}, Options{},
			"host system of root " + n.drv["hello"] + `: system "aarch64-darwin" is not one decross-store knows`},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Map(ctx, tt.store, tt.roots, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestForeignCodeIsNamed: ELF of another platform, Mach-O and PE files
// never decide a class silently.
func TestForeignCodeIsNamed(t *testing.T) {
	pl := testPlatforms(t, "aarch64-linux", "x86_64-linux", suffix)
	be := platform.ELF{Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2MSB}
	res := &classify.Result{
		Machines: map[platform.ELF]*classify.Files{be: {Names: []string{"/lib/be.so"}, Count: 1}},
		Foreign:  map[string]*classify.Files{"PE arm64": {Names: []string{"/boot/a.efi", "/boot/b.efi"}, Count: 3}},
	}
	tests := []struct {
		name      string
		path      string
		wantClass Class
		wantWhy   string
	}{
		{"no suffix", storePath("a", "firmware-1.0"), Neutral,
			"no host (aarch64) or build-platform (x86_64, i686) ELF files, but EM_AARCH64 64-bit big-endian ELF in /lib/be.so, PE arm64 in /boot/a.efi, /boot/b.efi and 1 more"},
		{"host suffix", storePath("b", "firmware-"+suffix+"-1.0"), Host, "host suffix in its name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, why := classOf(tt.path, res, pl, nil, nil)
			if class != tt.wantClass || why != tt.wantWhy {
				t.Errorf("class %v, why %q; want %v, %q", class, why, tt.wantClass, tt.wantWhy)
			}
			want := []string{tt.path + " holds EM_AARCH64 64-bit big-endian ELF in /lib/be.so, PE arm64 in /boot/a.efi, /boot/b.efi and 1 more: code for neither the host (aarch64-linux) nor the build platform (x86_64-linux), which does not count for its class (" + tt.wantClass.String() + ")"}
			if got := platformNotes(tt.path, class, res, pl); !reflect.DeepEqual(got, want) {
				t.Errorf("notes %q, want %q", got, want)
			}
		})
	}
}

// TestBuildELFPerPlatform: i686 code is the build platform's only when
// that is x86_64; equal platforms leave ELF out of the decision.
func TestBuildELFPerPlatform(t *testing.T) {
	i686 := platform.ELF{Machine: elf.EM_386, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}
	x86 := platform.ELF{Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}
	arm := platform.ELF{Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}
	rv := platform.ELF{Machine: elf.EM_RISCV, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}
	tests := []struct {
		host, build string
		elf         platform.ELF
		want        Class
	}{
		{"riscv64-linux", "x86_64-linux", i686, Build},
		{"riscv64-linux", "x86_64-linux", rv, Host},
		{"armv7l-linux", "x86_64-linux", arm, Host},
		{"armv6l-linux", "x86_64-linux", arm, Host},
		{"x86_64-linux", "aarch64-linux", i686, Host},
		{"x86_64-linux", "aarch64-linux", x86, Host},
		{"aarch64-linux", "riscv64-linux", rv, Build},
		{"aarch64-linux", "riscv64-linux", x86, Neutral},
		{"x86_64-linux", "x86_64-linux", x86, Host},
	}
	for _, tt := range tests {
		pl := testPlatforms(t, tt.host, tt.build, "")
		res := &classify.Result{Machines: map[platform.ELF]*classify.Files{tt.elf: {Names: []string{"/bin/x"}, Count: 1}}}
		if got, why := classOf(storePath("x", "tool-1.0"), res, pl, nil, nil); got != tt.want {
			t.Errorf("host %s, build %s, %v: %v (%s), want %v", tt.host, tt.build, tt.elf, got, why, tt.want)
		}
	}
}

// TestCheckStatic: a pkgsStatic set has equal names on both sides; the
// host config both carry marks its host paths, and its platforms come from
// the mapping file.
func TestCheckStatic(t *testing.T) {
	const static = "static-aarch64-unknown-linux-musl"
	s := newMemStore()
	hello := storePath("c/hello", "hello-"+static+"-2.12")
	doc := storePath("c/doc", "hello-"+static+"-2.12-doc")
	s.addPath(t, hello, []string{doc}, "", file{path: "/", data: realELF(t, "aarch64", doc)})
	s.addPath(t, doc, nil, "", file{path: "/", data: []byte("docs")})
	m, err := mapping.New([]mapping.Entry{
		{Native: storePath("n/hello", "hello-"+static+"-2.12"), Cross: hello},
		{Native: storePath("n/doc", "hello-"+static+"-2.12-doc"), Cross: doc},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, err = m.WithSystems("aarch64-linux", "x86_64-linux"); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(context.Background(), s, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{hello: "host: aarch64 ELF in /", doc: "host: host suffix in its name"}
	if got := classes(rep); !reflect.DeepEqual(got, want) || !rep.OK() || len(rep.Notes) != 0 {
		t.Errorf("classes %v, want %v; problems %q, notes %q", got, want, rep.Problems, rep.Notes)
	}
}

// TestCheckFallbackPlatforms: an old mapping with neither derivers nor
// suffixed names: the platforms are assumed, and the notes say so.
func TestCheckFallbackPlatforms(t *testing.T) {
	s := newMemStore()
	cross := storePath("c/data", "data-1.0")
	s.addPath(t, cross, nil, "", file{path: "/", data: []byte("x")})
	m, err := mapping.New([]mapping.Entry{{Native: storePath("n/data", "data-1.0"), Cross: cross}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Check(context.Background(), s, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"the mapping does not record its host system, and neither its derivations nor its names tell: assuming aarch64-linux",
		"the mapping does not record its build system, and neither its derivations nor its names tell: assuming x86_64-linux",
	}
	if !reflect.DeepEqual(rep.Notes, want) {
		t.Errorf("notes %q, want %q", rep.Notes, want)
	}
	// A host suffix tells the host system.
	sfxCross := storePath("c/hello", "hello-riscv64-unknown-linux-gnu-2.12")
	s.addPath(t, sfxCross, nil, "", file{path: "/", data: []byte("x")})
	m, err = mapping.New([]mapping.Entry{{Native: storePath("n/hello", "hello-2.12"), Cross: sfxCross}})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err = Check(context.Background(), s, m, Options{}); err != nil {
		t.Fatal(err)
	}
	if w := "the mapping does not record its host system: riscv64-linux, from the host suffix riscv64-unknown-linux-gnu"; len(rep.Notes) == 0 || rep.Notes[0] != w {
		t.Errorf("notes %q, want first %q", rep.Notes, w)
	}
}

// staticStore is a pkgsStatic set: the same names on both sides, both
// carrying the host config; a build-platform bash (an input by role) and a
// host one (a buildInput) of equal names.
func staticStore(t *testing.T) (*memStore, *testGraph, *testGraph) {
	t.Helper()
	const static = "static-aarch64-unknown-linux-musl"
	specs := []spec{
		{key: "musl", name: "musl-" + static + "-1.2.5"},
		{key: "bash", name: "bash-5.2"},
		{key: "hbash", name: "bash-" + static + "-5.2"},
		{key: "hello", name: "hello-" + static + "-2.12", inputs: []string{"musl", "bash", "hbash"},
			env: map[string]string{"nativeBuildInputs": "{bash.out}", "buildInputs": "{musl.out} {hbash.out}"}},
	}
	n, c := graphOf(t, "native", specs), graphOf(t, "cross", specs)
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	o := func(k string) string { return c.out[k]["out"] }
	s.addPath(t, o("musl"), nil, "", file{path: "/", data: realELF(t, "aarch64", "")})
	s.addPath(t, o("hbash"), nil, "", file{path: "/", data: realELF(t, "aarch64", "")})
	s.addPath(t, o("hello"), []string{o("musl"), o("hbash")}, "", file{path: "/", data: realELF(t, "aarch64", o("musl")+" "+o("hbash"))})
	return s, n, c
}

// TestMapStaticSet: a static set names packages alike on both sides, so
// there is no suffix to infer and names pair as they are: musl, the host
// bash and hello are mapped, the build-platform bash is not.
func TestMapStaticSet(t *testing.T) {
	s, n, c := staticStore(t)
	rep, err := Map(context.Background(), s, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	rep.WriteText(&buf)
	if rep.Mapping.Len() != 3 || !rep.OK() {
		t.Errorf("static set: %d entries, want 3 and no problem or leak:\n%s", rep.Mapping.Len(), buf.String())
	}
}

// TestCheckSuffixAgainstSystem: a mapping whose names carry the suffix of
// another system than the one it records is a problem; equal ELF on both
// sides is a note.
func TestCheckSuffixAgainstSystem(t *testing.T) {
	s := newMemStore()
	cross := storePath("c/hello", "hello-"+suffix+"-2.12")
	s.addPath(t, cross, nil, "", file{path: "/", data: []byte("x")})
	m, err := mapping.New([]mapping.Entry{{Native: storePath("n/hello", "hello-2.12"), Cross: cross}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, build     string
		problems, notes []string
	}{
		{"riscv64-linux", "x86_64-linux", []string{"host suffix " + suffix + " is a config of aarch64-linux, but the host system is riscv64-linux: native and cross paths are for different platforms"}, nil},
		{"aarch64-linux", "aarch64-linux", nil, []string{"host aarch64-linux and build platform aarch64-linux run the same ELF code: build-platform paths are told apart by the derivation graph only"}},
		{"aarch64-linux", "x86_64-linux", nil, nil},
	}
	for _, tt := range tests {
		mm, err := m.WithSystems(tt.host, tt.build)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Check(context.Background(), s, mm, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rep.Problems, tt.problems) || !reflect.DeepEqual(rep.Notes, tt.notes) {
			t.Errorf("host %s, build %s: problems %q, notes %q; want %q, %q", tt.host, tt.build, rep.Problems, rep.Notes, tt.problems, tt.notes)
		}
	}
}
