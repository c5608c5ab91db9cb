package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
)

// shapeRole is one pair of example/shapes/mapping.nix: the native output
// and the cross output that plays its role.
type shapeRole struct {
	Role        string `json:"role"`
	Native      string `json:"native"`
	Cross       string `json:"cross"`
	Output      string `json:"output"`      // native output name
	CrossOutput string `json:"crossOutput"` // cross output name
	NativeDrv   string `json:"nativeDrv"`
	CrossDrv    string `json:"crossDrv"`
}

// shapes is what example/shapes/build.sh built.
type shapes struct {
	mappingFile string // the expected mapping
	rootsFile   string // the root pairs, a map --pairs file
	roles       map[string]shapeRole
}

func (s shapes) get(t *testing.T, role string) shapeRole {
	t.Helper()
	r, ok := s.roles[role]
	if !ok {
		t.Fatalf("example/shapes has no role %q", role)
	}
	return r
}

// requireShapeTools skips (fails in CI) without what the cross side of
// example/shapes is built with, beyond what RequireNix checks.
func requireShapeTools(t *testing.T) {
	t.Helper()
	RequireNix(t)
	for _, tool := range []string{"aarch64-linux-gnu-g++", "patchelf"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "missing %s; install with: apt-get install -y g++-aarch64-linux-gnu patchelf", tool)
		}
	}
}

// buildShapes runs example/shapes/build.sh into dir (Nix caches the builds,
// so a second run costs about a second).
func buildShapes(t *testing.T, dir string) shapes {
	t.Helper()
	requireShapeTools(t)
	EnsureDaemon(t)
	script, err := filepath.Abs(filepath.Join("..", "example", "shapes", "build.sh"))
	if err != nil {
		t.Fatalf("build example/shapes: %v", err)
	}
	start := time.Now()
	if _, err := nixCommand(testContext(t, 2*time.Minute), script, dir); err != nil {
		t.Fatalf("build example/shapes: %v", err)
	}
	t.Logf("example/shapes/build.sh took %v", time.Since(start).Round(time.Millisecond))
	raw, err := os.ReadFile(filepath.Join(dir, "roles.json"))
	if err != nil {
		t.Fatalf("build example/shapes: %v", err)
	}
	var list []shapeRole
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("build example/shapes: parse roles.json: %v", err)
	}
	s := shapes{
		mappingFile: filepath.Join(dir, "mapping.json"),
		rootsFile:   filepath.Join(dir, "roots.json"),
		roles:       make(map[string]shapeRole, len(list)),
	}
	for _, r := range list {
		s.roles[r.Role] = r
	}
	return s
}

// drvInput follows the attribute attr of the derivation at drvPath to the
// input derivation whose output its first store path names, and returns
// that derivation's path and name, and the output.
func drvInput(t *testing.T, drvPath, attr string) (string, string, string) {
	t.Helper()
	d := readDrv(t, drvPath)
	val, ok := d.Env[attr]
	if !ok {
		t.Fatalf("%s has no attribute %s", drvPath, attr)
	}
	i := strings.Index(val, "/nix/store/")
	if i < 0 {
		t.Fatalf("%s: %s = %q names no store path", drvPath, attr, val)
	}
	path := val[i:]
	if end := strings.IndexAny(path[len("/nix/store/"):], "/ :\n\""); end >= 0 {
		path = path[:len("/nix/store/")+end]
	}
	for in := range d.InputDerivations {
		input := readDrv(t, in)
		for name, o := range input.Outputs {
			if o.Path == path {
				return in, input.Env["name"], name
			}
		}
	}
	t.Fatalf("%s: %s names %s, which no input derivation builds", drvPath, attr, path)
	return "", "", ""
}

// TestShapes checks example/shapes, the set shaped like a real nixpkgs
// closure: its graph has nixpkgs' links, map finds the mapping from the
// roots alone, and the served closure copies, verifies and runs.
func TestShapes(t *testing.T) {
	work := t.TempDir()
	s := buildShapes(t, filepath.Join(work, "shapes"))
	hello, cxx, scripts, sh := s.get(t, "hello"), s.get(t, "hello-cxx"), s.get(t, "hello-scripts"), s.get(t, "hello-sh")

	// The fixture itself: the links map has to walk are where nixpkgs has
	// them, and a package reaches glibc and the compiler only through its
	// stdenv's wrapper.
	t.Run("graph", func(t *testing.T) {
		tests := []struct {
			name     string
			root     string   // .drv to start from
			chain    []string // attributes to follow
			wantName string   // name of the derivation reached
			wantOut  string   // its output named
		}{
			{"native stdenv", hello.NativeDrv, []string{"stdenv"}, "stdenv-linux", "out"},
			{"native wrapper", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs"}, "gcc-wrapper-13.3.0", "out"},
			{"native compiler", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "cc"}, "gcc-13.3.0", "out"},
			{"native bintools", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "bintools"}, "binutils-wrapper-2.43.1", "out"},
			{"native libc", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib"}, "glibc-2.40", "out"},
			{"native makeFlags, first path", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "makeFlags"}, "bootstrap-stage0-glibc-bootstrapFiles", "out"},
			{"native glibc's compiler", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "stdenv", "defaultNativeBuildInputs"}, "bootstrap-stage2-gcc-wrapper-", "out"},
			{"native xgcc", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "stdenv", "defaultNativeBuildInputs", "cc"}, "xgcc-13.3.0", "out"},
			{"native libidn2", hello.NativeDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "postPatch"}, "libidn2-2.3.7", "out"},
			{"native script's bash", scripts.NativeDrv, []string{"buildInputs"}, "bash-5.2p37", "out"},
			{"native stdenv's bash", scripts.NativeDrv, []string{"stdenv", "shell"}, "bash-5.2p37", "out"},
			{"native initialPath", sh.NativeDrv, []string{"stdenv", "initialPath"}, "bash-5.2p37", "out"},
			{"cross stdenv", hello.CrossDrv, []string{"stdenv"}, "stdenv-linux", "out"},
			{"cross wrapper", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs"}, "aarch64-unknown-linux-gnu-gcc-wrapper-13.3.0", "out"},
			{"cross compiler", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs", "cc"}, "aarch64-unknown-linux-gnu-gcc-13.3.0", "out"},
			{"cross bintools", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs", "bintools"}, "aarch64-unknown-linux-gnu-binutils-wrapper-2.43.1", "out"},
			{"cross libc", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib"}, "glibc-aarch64-unknown-linux-gnu-2.40", "out"},
			{"cross makeFlags, first path", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "makeFlags"}, "libgcc-aarch64-unknown-linux-gnu-13.3.0", "out"},
			{"cross glibc's compiler", hello.CrossDrv, []string{"stdenv", "defaultNativeBuildInputs", "libc_lib", "stdenv", "defaultNativeBuildInputs", "cc"}, "aarch64-unknown-linux-gnu-nolibc-gcc-13.3.0", "out"},
			{"cross script's bash", scripts.CrossDrv, []string{"buildInputs"}, "bash-aarch64-unknown-linux-gnu-5.2p37", "out"},
			{"cross stdenv's bash", scripts.CrossDrv, []string{"stdenv", "shell"}, "bash-5.2p37", "out"},
			{"cross build perl", hello.CrossDrv, []string{"nativeBuildInputs"}, "perl-5.40.0", "out"},
			{"cross build python", cxx.CrossDrv, []string{"nativeBuildInputs"}, "python3-3.12.8", "out"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				drv, name, out := tc.root, "", ""
				for _, attr := range tc.chain {
					drv, name, out = drvInput(t, drv, attr)
				}
				if name != tc.wantName || out != tc.wantOut {
					t.Errorf("%s -> %s reaches %s output %s, want %s output %s", tc.root, strings.Join(tc.chain, " -> "), name, out, tc.wantName, tc.wantOut)
				}
			})
		}
		// The trusted dir is the last makeFlags entry natively, the only
		// path in it cross: a role found by prefix, not by position.
		for _, tc := range []struct{ drv, want string }{
			{s.get(t, "glibc").NativeDrv, "user-defined-trusted-dirs=" + s.get(t, "libgcc").Native + "/lib"},
			{s.get(t, "glibc").CrossDrv, "user-defined-trusted-dirs=" + s.get(t, "libgcc").Cross + "/lib"},
		} {
			if got := readDrv(t, tc.drv).Env["makeFlags"]; !strings.HasSuffix(got, " "+tc.want) {
				t.Errorf("%s: makeFlags = %q, want it to end in %q", tc.drv, got, tc.want)
			}
		}
		// Platforms come from the data: every cross .drv is an x86_64 one.
		for _, r := range s.roles {
			if got := readDrv(t, r.NativeDrv).Platform; got != "aarch64-linux" {
				t.Errorf("native %s: system %s, want aarch64-linux", r.NativeDrv, got)
			}
			if got := readDrv(t, r.CrossDrv).Platform; got != "x86_64-linux" {
				t.Errorf("cross %s: system %s, want x86_64-linux", r.CrossDrv, got)
			}
		}
		if libgcc := s.get(t, "libgcc"); libgcc.Output != "libgcc" || libgcc.CrossOutput != "out" {
			t.Errorf("libgcc role: native output %s, cross output %s; want libgcc and out", libgcc.Output, libgcc.CrossOutput)
		}
	})

	want := loadMapping(t, s.mappingFile)
	mapped := fmt.Sprintf(", %d mapped,", len(want.Entries()))

	// The expected mapping serves every path of the cross closure as host
	// code: nothing of the build platform leaks into it.
	t.Run("expected mapping checks", func(t *testing.T) {
		stdout, stderr, err := runTool(t, "check", "--mapping", s.mappingFile)
		if err != nil {
			t.Fatalf("check: %v\n%s\n%s", err, stdout, stderr)
		}
		for _, w := range []string{"leaks: 0", "problems: 0", mapped} {
			if !strings.Contains(stdout, w) {
				t.Errorf("check output lacks %q:\n%s", w, stdout)
			}
		}
	})

	// map pairs the whole closure from the four roots alone, with no
	// hand-made pairs, and says why: libgcc by its position in glibc's
	// makeFlags. The copy below serves what map wrote.
	mappedFile := filepath.Join(work, "mapped.json")
	mapOut, mapErr, mapFail := runTool(t, "map", "--pairs", s.rootsFile, "--strict", "-v", "-o", mappedFile)
	if mapFail != nil {
		t.Fatalf("map: %v\n%s\n%s", mapFail, mapOut, mapErr)
	}
	t.Run("map from the roots", func(t *testing.T) {
		if got := loadMapping(t, mappedFile); !reflect.DeepEqual(pairedEntries(got), want.Entries()) {
			t.Errorf("map from the roots = %v\nwant %v", got.Entries(), want.Entries())
		}
		// With -o, the report goes to stderr. The entry of libgcc (native
		// xgcc's libgcc output) says it was paired by its place in glibc's
		// makeFlags.
		i := strings.Index(mapErr, "-xgcc-13.3.0-libgcc\n")
		if i < 0 {
			t.Fatalf("map -v does not list xgcc-13.3.0-libgcc:\n%s", mapErr)
		}
		entry := mapErr[i:]
		if j := strings.Index(entry, "  serve "); j >= 0 {
			entry = entry[:j]
		}
		if !strings.Contains(entry, "-libgcc-aarch64-unknown-linux-gnu-13.3.0\n") || !strings.Contains(entry, "paired by position: attribute makeFlags word 1, as an input of ") {
			t.Errorf("map -v entry of libgcc does not say it was paired by its position in makeFlags:\n%s", entry)
		}
		if n := strings.Count(mapErr, "paired by root\n"); n != 4 {
			t.Errorf("map -v: %d paths paired as roots, want the 4 roots:\n%s", n, mapErr)
		}
		// check of what map wrote says the same, from the file.
		out, stderr, err := runTool(t, "check", "--mapping", mappedFile)
		if err != nil {
			t.Fatalf("check: %v\n%s\n%s", err, out, stderr)
		}
		if !strings.Contains(out, "paired by position: attribute makeFlags word 1, as an input of ") ||
			strings.Count(out, "paired by root (as recorded in the mapping file)\n") != 4 {
			t.Errorf("check of the mapping map wrote does not repeat its reasons:\n%s", out)
		}
	})

	t.Run("copy and run", func(t *testing.T) {
		srv := startServer(t, mappedFile)
		ctx := testContext(t, 5*time.Minute)
		dest := filepath.Join(work, "client-store")
		t.Cleanup(func() { makeWritable(t, dest) })
		roots := []string{hello.Native, cxx.Native, scripts.Native, sh.Native}
		if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", append([]string{"copy", "--from", srv.url(srv.clientKey), "--to", dest}, roots...)...); err != nil {
			t.Fatal(err)
		}
		if _, _, err := srv.nix(ctx, "", "nix", append([]string{"store", "verify", "--store", dest, "--sigs-needed", "1", "-r"}, roots...)...); err != nil {
			t.Fatal(err)
		}
		// The copy is the native closure the mapping names, nothing else:
		// no cross path, and no libidn2 or gcc's libgcc output, which the
		// cross closure does not have.
		stdout, _, err := srv.nix(ctx, "", "nix", append([]string{"path-info", "--store", dest, "-r"}, roots...)...)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(stdout)
		sort.Strings(got)
		var natives []string
		for _, e := range want.Entries() {
			natives = append(natives, e.Native)
		}
		sort.Strings(natives)
		if !reflect.DeepEqual(got, natives) {
			t.Errorf("copied closure = %v\nwant the mapping's native paths %v", got, natives)
		}

		store := filepath.Join(dest, "nix", "store")
		// A script with bash among its inputs names the host bash; one
		// without keeps the cross build's /bin/sh, where a native build
		// would have named bash.
		for _, tc := range []struct{ script, want string }{
			{filepath.Join(filepath.Base(scripts.Native), "bin", "hello-again"), "#!" + s.get(t, "bash").Native + "/bin/bash"},
			{filepath.Join(filepath.Base(sh.Native), "bin", "hello-sh"), "#!/bin/sh"},
		} {
			if got := firstLine(t, filepath.Join(store, tc.script)); got != tc.want {
				t.Errorf("%s: shebang %q, want %q", tc.script, got, tc.want)
			}
		}

		tests := []struct {
			name    string
			remove  string // role whose path is left out of the store
			program string
			want    string // stdout, or what the error names
		}{
			{name: "C", program: filepath.Join(hello.Native, "bin", "hello"), want: "hello 2.12.1: thread exited, unwound by libgcc_s\n"},
			{name: "C++", program: filepath.Join(cxx.Native, "bin", "hello-cxx"), want: "hello-cxx 1.0: caught thrown 3 frames deep\n"},
			// glibc finds libgcc_s only through the rewritten trusted dir.
			{name: "C without libgcc", remove: "libgcc", program: filepath.Join(hello.Native, "bin", "hello"), want: "libgcc_s.so.1"},
			{name: "C++ without the compiler's libraries", remove: "gccLib", program: filepath.Join(cxx.Native, "bin", "hello-cxx"), want: "libstdc++.so.6"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				dir := store
				if tc.remove != "" {
					dir = storeWithout(t, store, s.get(t, tc.remove).Native)
				}
				out, err := RunInStore(t, dir, tc.program)
				if tc.remove == "" {
					if err != nil {
						t.Fatal(err)
					}
					if out != tc.want {
						t.Errorf("%s printed %q, want %q", tc.program, out, tc.want)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("without %s: err %v (stdout %q); want a failure naming %s", tc.remove, err, out, tc.want)
				}
			})
		}
	})
}

// storeWithout copies the store directory store into a new one without
// the store path skip.
func storeWithout(t *testing.T, store, skip string) string {
	t.Helper()
	entries, err := os.ReadDir(store)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Cleanup(func() { makeWritable(t, dir) })
	args := []string{"-a", "--"}
	for _, e := range entries {
		if e.Name() != filepath.Base(skip) {
			args = append(args, filepath.Join(store, e.Name()))
		}
	}
	if len(args) == 2+len(entries) {
		t.Fatalf("%s is not in %s", skip, store)
	}
	if out, err := exec.CommandContext(testContext(t, time.Minute), "cp", append(args, dir)...).CombinedOutput(); err != nil {
		t.Fatalf("copy %s without %s: %v\n%s", store, skip, err, out)
	}
	return dir
}

func firstLine(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		t.Fatalf("%s is empty: %v", path, sc.Err())
	}
	return sc.Text()
}
