package pairing

import (
	"context"
	"debug/elf"
	"errors"
	"slices"
	"strings"
	"testing"
)

// Shapes of nixpkgs' real closures (pkgs/development/libraries/glibc,
// pkgs/development/compilers/gcc, pkgs/build-support/cc-wrapper): names
// that differ, outputs that differ, wrappers in between.
var (
	sfx = "-" + suffix + "-"
	// nativeLibc is glibc as the native bootstrap builds it: libgcc comes
	// from xgcc's libgcc output through makeFlags, libidn2 only natively.
	nativeLibc = []spec{
		{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "man", "info", "lib", "libgcc", "checksum"}},
		{key: "headers", name: "linux-headers-6.10"},
		{key: "libunistring", name: "libunistring-1.2"},
		{key: "libidn2", name: "libidn2-2.3.7", inputs: []string{"libunistring"}},
		{key: "glibc", name: "glibc-2.40", outputs: []string{"out", "dev", "bin"}, inputs: []string{"xgcc:libgcc", "headers", "libidn2"},
			env: map[string]string{
				"makeFlags":   "-j4 OBJCOPY=objcopy user-defined-trusted-dirs={xgcc.libgcc}/lib",
				"buildInputs": "{headers.out} {libidn2.out}",
			}},
	}
	crossLibc = []spec{
		{key: "libgcc", name: "libgcc" + sfx + "13.3.0"},
		{key: "headers", name: "linux-headers" + sfx + "6.10"},
		{key: "glibc", name: "glibc" + sfx + "2.40", outputs: []string{"out", "dev", "bin"}, inputs: []string{"libgcc", "headers"},
			env: map[string]string{
				"makeFlags":   "-j4 user-defined-trusted-dirs={libgcc.out}/lib",
				"buildInputs": "{headers.out}",
			}},
	}
	// The compiler and its wrapper: natively gcc-13.3.0 (lib and libgcc
	// outputs), cross aarch64-unknown-linux-gnu-gcc-13.3.0 (lib output),
	// both reached from a package only through the stdenv.
	nativeCC = []spec{
		{key: "gcc", name: "gcc-13.3.0", outputs: []string{"out", "man", "info", "lib", "libgcc", "checksum"}},
		{key: "wrapper", name: "gcc-wrapper-13.3.0", inputs: []string{"gcc:out,lib", "glibc:out,dev,bin"},
			env: map[string]string{"cc": "{gcc.out}", "libc_lib": "{glibc.out}", "libc_dev": "{glibc.dev}", "libc_bin": "{glibc.bin}"}},
		{key: "stdenv", name: "stdenv-linux", inputs: []string{"wrapper"}, env: map[string]string{"defaultNativeBuildInputs": "{wrapper.out}"}},
		{key: "hello", name: "hello-2.12", inputs: []string{"stdenv", "gcc:lib"}, env: map[string]string{"stdenv": "{stdenv.out}", "libstdcxx": "{gcc.lib}"}},
	}
	crossCC = []spec{
		{key: "gcc", name: suffix + "-gcc-13.3.0", outputs: []string{"out", "man", "info", "lib"}},
		{key: "wrapper", name: suffix + "-gcc-wrapper-13.3.0", inputs: []string{"gcc:out,lib", "glibc:out,dev,bin"},
			env: map[string]string{"cc": "{gcc.out}", "libc_lib": "{glibc.out}", "libc_dev": "{glibc.dev}", "libc_bin": "{glibc.bin}"}},
		// The build platform's own compiler wrapper, for tools built on
		// the way: same name as the native wrapper, no prefix.
		{key: "buildwrapper", name: "gcc-wrapper-13.3.0"},
		{key: "stdenv", name: "stdenv-linux", inputs: []string{"wrapper", "buildwrapper"}, env: map[string]string{"defaultNativeBuildInputs": "{wrapper.out}", "buildCC": "{buildwrapper.out}"}},
		{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"stdenv", "gcc:lib"}, env: map[string]string{"stdenv": "{stdenv.out}", "libstdcxx": "{gcc.lib}"}},
	}
)

func withRoot(specs []spec, root spec) []spec {
	return append(slices.Clone(specs), root)
}

type pairCase struct {
	name          string
	native, cross []spec
	root          string   // key of the root on both sides; default hello
	users         []string // "ckey[.output]=nkey[.output]"
	opts          Options
	wantDrv       map[string]string // cross key -> native key
	wantOut       map[string]string // "ckey.output" -> "nkey.output"
	wantBy        map[string]string // "ckey.output" -> substring of why
	wantFail      map[string]string // cross key -> substring of NativeOf's error
	wantOutFail   map[string]string // "ckey.output" -> substring of OutputOf's error
	wantCands     map[string][]string
	wantProblems  []string // substrings, in order
	wantPairError string
}

// resolve turns "key" into a .drv path and "key.output" into an output
// path of g.
func resolve(t *testing.T, g *testGraph, ref string) string {
	t.Helper()
	k, o, isOut := strings.Cut(ref, ".")
	if !isOut {
		p, ok := g.drv[k]
		if !ok {
			t.Fatalf("no derivation %s", k)
		}
		return p
	}
	p, ok := g.out[k][o]
	if !ok {
		t.Fatalf("no output %s", ref)
	}
	return p
}

func runPairCase(t *testing.T, tt pairCase) {
	n, c := graphOf(t, "native", tt.native), graphOf(t, "cross", tt.cross)
	root := tt.root
	if root == "" {
		root = "hello"
	}
	opts := tt.opts
	for _, u := range tt.users {
		cr, nr, _ := strings.Cut(u, "=")
		opts.Pairs = append(opts.Pairs, UserPair{Cross: resolve(t, c, cr), Native: resolve(t, n, nr)})
	}
	p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv[root], Cross: c.drv[root]}}, opts)
	if tt.wantPairError != "" {
		if err == nil || !strings.Contains(err.Error(), tt.wantPairError) {
			t.Fatalf("Pair: %v, want an error containing %q", err, tt.wantPairError)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for ck, nk := range tt.wantDrv {
		if got, err := p.NativeOf(c.drv[ck]); err != nil || got != n.drv[nk] {
			t.Errorf("NativeOf(%s) = %s, %v; want %s", ck, got, err, n.drv[nk])
		}
	}
	for ck, want := range tt.wantFail {
		got, err := p.NativeOf(c.drv[ck])
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NativeOf(%s) = %s, %v; want an error containing %q", ck, got, err, want)
			continue
		}
		for _, cand := range tt.wantCands[ck] {
			if !strings.Contains(err.Error(), resolve(t, n, cand)) {
				t.Errorf("NativeOf(%s): error %q does not list the candidate %s", ck, err, cand)
			}
		}
	}
	for co, no := range tt.wantOut {
		ref, path, by, err := p.OutputOf(resolve(t, c, co))
		if err != nil || path != resolve(t, n, no) {
			t.Errorf("OutputOf(%s) = %v %s, %v; want %s", co, ref, path, err, no)
			continue
		}
		if want, ok := tt.wantBy[co]; ok && !strings.Contains(by.String(), want) {
			t.Errorf("OutputOf(%s) paired by %q, want %q", co, by, want)
		}
	}
	for co, want := range tt.wantOutFail {
		_, path, _, err := p.OutputOf(resolve(t, c, co))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OutputOf(%s) = %s, %v; want an error containing %q", co, path, err, want)
		}
	}
	checkProblems(t, p.Problems(), tt.wantProblems)
}

func TestPairShapes(t *testing.T) {
	helloOnLibc := func(specs []spec, name string) []spec {
		return withRoot(specs, spec{key: "hello", name: name, inputs: []string{"glibc"}, env: map[string]string{"buildInputs": "{glibc.out}"}})
	}
	ccNative := append(slices.Clone(nativeLibc), nativeCC...)
	ccCross := append(slices.Clone(crossLibc), crossCC...)
	tests := []pairCase{
		{
			name:    "libgcc: cross libgcc out takes the place of native xgcc libgcc in makeFlags",
			native:  helloOnLibc(nativeLibc, "hello-2.12"),
			cross:   helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			wantDrv: map[string]string{"glibc": "glibc", "libgcc": "xgcc", "headers": "headers"},
			wantOut: map[string]string{"libgcc.out": "xgcc.libgcc", "glibc.out": "glibc.out", "glibc.dev": "glibc.dev"},
			wantBy: map[string]string{
				"libgcc.out": "position: attribute makeFlags word 1, as an input of " + graphOf(t, "cross", helloOnLibc(crossLibc, "hello"+sfx+"2.12")).drv["glibc"],
				"glibc.out":  "name",
			},
		},
		{
			name: "role: the only path of an attribute on both sides, whatever its name",
			native: withRoot([]spec{{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "libgcc"}}, {key: "zlib", name: "zlib-1.3"}},
				spec{key: "hello", name: "glibc-2.40", inputs: []string{"xgcc:libgcc", "zlib"}, env: map[string]string{"libgcc": "{xgcc.libgcc}", "buildInputs": "{zlib.out}"}}),
			cross: withRoot([]spec{{key: "libgcc", name: "libgcc" + sfx + "13.3.0"}, {key: "zlib", name: "zlib" + sfx + "1.3"}},
				spec{key: "hello", name: "glibc" + sfx + "2.40", inputs: []string{"libgcc", "zlib"}, env: map[string]string{"libgcc": "{libgcc.out}", "buildInputs": "{zlib.out}"}}),
			wantDrv: map[string]string{"libgcc": "xgcc", "zlib": "zlib"},
			wantOut: map[string]string{"libgcc.out": "xgcc.libgcc"},
			wantBy:  map[string]string{"libgcc.out": "role: attribute libgcc"},
		},
		{
			name:   "libidn2: native-only inputs are never asked for, nothing is guessed",
			native: helloOnLibc(nativeLibc, "hello-2.12"),
			cross:  helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			// headers pairs by name although buildInputs has two paths
			// natively and one cross: a list position says nothing.
			wantDrv: map[string]string{"headers": "headers"},
			wantBy:  map[string]string{"headers.out": "name"},
			wantOut: map[string]string{"headers.out": "headers.out"},
		},
		{
			name: "lists of the same length: a place in buildInputs pairs nothing",
			native: withRoot([]spec{{key: "zlib", name: "zlib-1.3"}, {key: "libidn2", name: "libidn2-2.3.7"}},
				spec{key: "hello", name: "hello-2.12", inputs: []string{"zlib", "libidn2"}, env: map[string]string{"buildInputs": "{zlib.out} {libidn2.out}"}}),
			cross: withRoot([]spec{{key: "zlib", name: "zlib" + sfx + "1.3"}, {key: "extra", name: "extra" + sfx + "1.0"}},
				spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"zlib", "extra"}, env: map[string]string{"buildInputs": "{zlib.out} {extra.out}"}}),
			wantDrv:  map[string]string{"zlib": "zlib"},
			wantFail: map[string]string{"extra": "no candidate"},
		},
		{
			name: "a template that repeats says nothing: names decide",
			native: withRoot([]spec{{key: "a", name: "liba-1.0"}, {key: "b", name: "libb-1.0"}},
				spec{key: "hello", name: "hello-2.12", inputs: []string{"a", "b"}, env: map[string]string{"NIX_LDFLAGS": "-L{a.out}/lib -L{b.out}/lib"}}),
			cross: withRoot([]spec{{key: "a", name: "liba" + sfx + "1.0"}, {key: "b", name: "libb" + sfx + "1.0"}},
				spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"a", "b"}, env: map[string]string{"NIX_LDFLAGS": "-L{b.out}/lib -L{a.out}/lib"}}),
			wantDrv: map[string]string{"a": "a", "b": "b"},
		},
		{
			name: "parents that disagree on a derivation leave its placed output unpaired",
			native: withRoot([]spec{
				{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "libgcc"}},
				{key: "other", name: "libgcc-13.3.0"},
				{key: "glibc", name: "glibc-2.40", inputs: []string{"xgcc:libgcc"}, env: map[string]string{"makeFlags": "user-defined-trusted-dirs={xgcc.libgcc}/lib"}},
				{key: "tool", name: "tool-1.0", inputs: []string{"other"}},
			}, spec{key: "hello", name: "hello-2.12", inputs: []string{"glibc", "tool"}}),
			cross: withRoot([]spec{
				{key: "libgcc", name: "libgcc" + sfx + "13.3.0"},
				{key: "glibc", name: "glibc" + sfx + "2.40", inputs: []string{"libgcc"}, env: map[string]string{"makeFlags": "user-defined-trusted-dirs={libgcc.out}/lib"}},
				{key: "tool", name: "tool" + sfx + "1.0", inputs: []string{"libgcc"}},
			}, spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"glibc", "tool"}}),
			wantFail:    map[string]string{"libgcc": "different parents pair it with several native derivations"},
			wantCands:   map[string][]string{"libgcc": {"xgcc", "other"}},
			wantOutFail: map[string]string{"libgcc.out": "different parents pair it with several native derivations"},
		},
		{
			name:    "compiler: target prefix removed, lib output to lib, through stdenv and wrapper to glibc",
			native:  ccNative,
			cross:   ccCross,
			wantDrv: map[string]string{"stdenv": "stdenv", "wrapper": "wrapper", "gcc": "gcc", "glibc": "glibc", "libgcc": "xgcc"},
			wantOut: map[string]string{"gcc.lib": "gcc.lib", "glibc.out": "glibc.out", "libgcc.out": "xgcc.libgcc"},
			wantBy:  map[string]string{"gcc.lib": "name", "glibc.out": "name"},
			// The build platform's wrapper is named like the native one,
			// but only the prefixed one is made for the host.
			wantFail: map[string]string{"buildwrapper": "build-platform namesake of the host derivation"},
		},
		{
			name: "compiler: stage and nolibc prefixes, the bootstrap xgcc",
			native: withRoot([]spec{
				{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "lib", "libgcc"}},
				{key: "final", name: "gcc-13.3.0", outputs: []string{"out", "lib"}},
				{key: "w1", name: "bootstrap-stage1-gcc-wrapper-", inputs: []string{"xgcc"}, env: map[string]string{"cc": "{xgcc.out}"}},
				{key: "w2", name: "gcc-wrapper-13.3.0", inputs: []string{"final"}, env: map[string]string{"cc": "{final.out}"}},
			}, spec{key: "hello", name: "hello-2.12", inputs: []string{"w1", "w2"}}),
			cross: withRoot([]spec{
				{key: "nolibc", name: suffix + "-nolibc-gcc-13.3.0", outputs: []string{"out", "lib"}},
				{key: "final", name: suffix + "-stage-final-gcc-13.3.0", outputs: []string{"out", "lib"}},
				{key: "w1", name: suffix + "-stage-static-gcc-wrapper-", inputs: []string{"nolibc"}, env: map[string]string{"cc": "{nolibc.out}"}},
				{key: "w2", name: suffix + "-gcc-wrapper-13.3.0", inputs: []string{"final"}, env: map[string]string{"cc": "{final.out}"}},
			}, spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"w1", "w2"}}),
			users:   []string{"w1=w1"},
			wantDrv: map[string]string{"w1": "w1", "w2": "w2", "final": "final", "nolibc": "xgcc"},
			wantBy:  map[string]string{"nolibc.lib": "name"},
			wantOut: map[string]string{"nolibc.lib": "xgcc.lib", "final.lib": "final.lib"},
		},
		{
			name: "bash: the build-platform bash in a shebang attribute is no partner, the host one is",
			native: withRoot([]spec{{key: "bash", name: "bash-5.2p37"}}, spec{key: "hello", name: "interp-1.0", inputs: []string{"bash"},
				env: map[string]string{"shell": "{bash.out}/bin/bash", "buildInputs": "{bash.out}"}}),
			cross: withRoot([]spec{{key: "buildbash", name: "bash-5.2p37"}, {key: "bash", name: "bash" + sfx + "5.2p37"}}, spec{key: "hello", name: "interp" + sfx + "1.0", inputs: []string{"bash", "buildbash"},
				env: map[string]string{"shell": "{buildbash.out}/bin/bash", "buildInputs": "{bash.out}"}}),
			wantDrv:  map[string]string{"bash": "bash"},
			wantFail: map[string]string{"buildbash": "build-platform namesake of the host derivation"},
		},
		{
			name: "ambiguity: two places give two native outputs, both listed",
			native: withRoot([]spec{
				{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "libgcc"}},
				{key: "gcc", name: "gcc-13.3.0", outputs: []string{"out", "lib"}},
			}, spec{key: "hello", name: "glibc-2.40", inputs: []string{"xgcc:libgcc", "gcc:lib"},
				env: map[string]string{"makeFlags": "user-defined-trusted-dirs={xgcc.libgcc}/lib", "LIBGCC": "{gcc.lib}/lib"}}),
			cross: withRoot([]spec{{key: "libgcc", name: "libgcc" + sfx + "13.3.0"}},
				spec{key: "hello", name: "glibc" + sfx + "2.40", inputs: []string{"libgcc"},
					env: map[string]string{"makeFlags": "user-defined-trusted-dirs={libgcc.out}/lib", "LIBGCC": "{libgcc.out}/lib"}}),
			wantFail:  map[string]string{"libgcc": "sits where several native outputs sit"},
			wantCands: map[string][]string{"libgcc": {"xgcc", "gcc"}},
		},
		{
			name: "ambiguity settled by --pair",
			native: withRoot([]spec{
				{key: "xgcc", name: "xgcc-13.3.0", outputs: []string{"out", "libgcc"}},
				{key: "gcc", name: "gcc-13.3.0", outputs: []string{"out", "lib"}},
			}, spec{key: "hello", name: "glibc-2.40", inputs: []string{"xgcc:libgcc", "gcc:lib"},
				env: map[string]string{"makeFlags": "user-defined-trusted-dirs={xgcc.libgcc}/lib", "LIBGCC": "{gcc.lib}/lib"}}),
			cross: withRoot([]spec{{key: "libgcc", name: "libgcc" + sfx + "13.3.0"}},
				spec{key: "hello", name: "glibc" + sfx + "2.40", inputs: []string{"libgcc"},
					env: map[string]string{"makeFlags": "user-defined-trusted-dirs={libgcc.out}/lib", "LIBGCC": "{libgcc.out}/lib"}}),
			users:   []string{"libgcc.out=xgcc.libgcc"},
			wantDrv: map[string]string{"libgcc": "xgcc"},
			wantOut: map[string]string{"libgcc.out": "xgcc.libgcc"},
			wantBy:  map[string]string{"libgcc.out": "--pair"},
		},
		{
			name:         "--pair contradicting a derived pair is used and reported",
			native:       helloOnLibc(nativeLibc, "hello-2.12"),
			cross:        helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			users:        []string{"libgcc.out=xgcc.lib"},
			wantOut:      map[string]string{"libgcc.out": "xgcc.lib"},
			wantBy:       map[string]string{"libgcc.out": "--pair"},
			wantProblems: []string{"contradicts the pair by position: attribute makeFlags word 1"},
		},
		{
			name:         "--pair of derivations contradicting a pair by name",
			native:       helloOnLibc(nativeLibc, "hello-2.12"),
			cross:        helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			users:        []string{"headers=libunistring"},
			wantDrv:      map[string]string{"headers": "libunistring"},
			wantBy:       map[string]string{"headers.out": "--pair"},
			wantOut:      map[string]string{"headers.out": "libunistring.out"},
			wantProblems: []string{"contradicts the pair by name, as an input of"},
		},
		{
			name: "--pair never reached",
			native: withRoot([]spec{{key: "deep", name: "deep-1.0"}},
				spec{key: "hello", name: "hello-2.12", inputs: []string{"deep"}}),
			cross: withRoot([]spec{{key: "deep", name: "deep" + sfx + "1.0"}, {key: "extra", name: "extra" + sfx + "1.0", inputs: []string{"deep"}}},
				spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"extra"}}),
			users:        []string{"deep=deep"},
			wantFail:     map[string]string{"extra": "no candidate", "deep": "not reached"},
			wantProblems: []string{"is never reached"},
		},
		{
			name:          "--pair of derivations whose outputs differ is refused",
			native:        helloOnLibc(nativeLibc, "hello-2.12"),
			cross:         helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			users:         []string{"glibc=xgcc"},
			wantPairError: "the native derivation has no output bin, dev; pair such outputs by their paths",
		},
		{
			name:          "--pair of a derivation and an output is refused",
			native:        helloOnLibc(nativeLibc, "hello-2.12"),
			cross:         helloOnLibc(crossLibc, "hello"+sfx+"2.12"),
			users:         []string{"libgcc=xgcc.libgcc"},
			wantPairError: "give two .drv paths or two output paths",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runPairCase(t, tt)
		})
	}
}

// TestUserPairErrors: a --pair naming paths no graph has is refused with
// the path named.
func TestUserPairErrors(t *testing.T) {
	n := graphOf(t, "native", withRoot(nativeLibc, spec{key: "hello", name: "hello-2.12", inputs: []string{"glibc"}}))
	c := graphOf(t, "cross", withRoot(crossLibc, spec{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"glibc"}}))
	roots := []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}
	tests := []struct {
		pair UserPair
		want string
	}{
		{UserPair{Cross: n.drv["glibc"], Native: n.drv["glibc"]}, "is not in the cross graph"},
		{UserPair{Cross: c.drv["glibc"], Native: c.drv["glibc"]}, "is not in the native graph"},
		{UserPair{Cross: n.out["glibc"]["out"], Native: n.out["glibc"]["out"]}, "no derivation of the cross graph has the output"},
		{UserPair{Cross: c.out["glibc"]["out"], Native: c.out["glibc"]["out"]}, "no derivation of the native graph has the output"},
	}
	for _, tt := range tests {
		_, err := Pair(n.Graph, c.Graph, roots, Options{Pairs: []UserPair{tt.pair}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Pair with --pair %s: %v, want an error containing %q", tt.pair, err, tt.want)
		}
	}
}

// TestMapShapes: the mapping holds cross libgcc's out as native xgcc's
// libgcc output and says why; a cross path without a native counterpart
// is a problem only when a served path references it.
func TestMapShapes(t *testing.T) {
	native := withRoot(nativeLibc, spec{key: "hello", name: "hello-2.12", inputs: []string{"glibc"}, env: map[string]string{"buildInputs": "{glibc.out}"}})
	cross := withRoot(append(slices.Clone(crossLibc), spec{key: "only", name: "only" + sfx + "1.0"}),
		spec{key: "hello", name: "hello" + sfx + "2.12", outputs: []string{"out", "doc"}, inputs: []string{"glibc", "only"}, env: map[string]string{"buildInputs": "{glibc.out} {only.out}"}})
	n, c := graphOf(t, "native", native), graphOf(t, "cross", cross)
	s := newMemStore()
	s.addDrvs(t, n)
	s.addDrvs(t, c)
	o := func(k, out string) string { return c.out[k][out] }
	aarch64 := func(name string, refs ...string) file {
		return file{path: "/" + name, data: elfHeader(elf.EM_AARCH64, strings.Join(refs, " "))}
	}
	s.addPath(t, o("libgcc", "out"), nil, "", file{path: "/", dir: true}, aarch64("libgcc_s.so.1"))
	s.addPath(t, o("glibc", "out"), []string{o("libgcc", "out")}, "", file{path: "/", dir: true}, aarch64("libc.so.6", o("libgcc", "out")+"/lib"))
	s.addPath(t, o("only", "out"), nil, "", file{path: "/", dir: true}, aarch64("libonly.so"))
	s.addPath(t, o("hello", "out"), []string{o("glibc", "out"), o("only", "out")}, "", file{path: "/", dir: true}, aarch64("hello", o("glibc", "out"), o("only", "out")))
	s.addPath(t, o("hello", "doc"), nil, "", file{path: "/", data: []byte("docs")})

	rep, err := Map(context.Background(), s, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := rep.Mapping.ByCross(o("libgcc", "out"))
	if !ok || e.Native != n.out["xgcc"]["libgcc"] || e.Deriver != n.drv["xgcc"] || e.Output != "libgcc" {
		t.Errorf("libgcc entry = %+v, %v; want native %s output libgcc of %s", e, ok, n.out["xgcc"]["libgcc"], n.drv["xgcc"])
	}
	for _, pr := range rep.Paths {
		want := map[string]string{
			o("libgcc", "out"): "position: attribute makeFlags word 1",
			o("glibc", "out"):  "name",
			o("hello", "out"):  "root",
		}[pr.Cross]
		if want != "" && !strings.Contains(pr.PairedBy, want) {
			t.Errorf("%s paired by %q, want %q", pr.Cross, pr.PairedBy, want)
		}
	}
	// hello's doc output has no native counterpart and nothing served
	// references it: a note. only has none and the served hello
	// references it: a problem.
	checkProblems(t, rep.Problems, []string{o("only", "out") + ": cannot pair"})
	var noted bool
	for _, note := range rep.Notes {
		noted = noted || strings.HasPrefix(note, o("hello", "doc")+" is not served (no served path references it)")
	}
	if !noted {
		t.Errorf("no note for the unreferenced %s; notes: %q", o("hello", "doc"), rep.Notes)
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "paired by position: attribute makeFlags word 1") {
		t.Errorf("WriteText does not say why libgcc was paired:\n%s", b.String())
	}
}

func TestPairingName(t *testing.T) {
	tests := []struct {
		name, want string
		marked     bool
	}{
		{"hello-" + suffix + "-2.12", "hello-2.12", true},
		{suffix + "-gcc-13.3.0", "gcc-13.3.0", true},
		{suffix + "-nolibc-gcc-13.3.0", "gcc-13.3.0", true},
		{suffix + "-stage-final-gcc-13.3.0", "gcc-13.3.0", true},
		{suffix + "-stage-static-gcc-13.3.0", "gcc-13.3.0", true},
		{suffix + "-gcc-wrapper-", "gcc-wrapper-", true},
		{suffix + "-binutils-wrapper-2.43.1", "binutils-wrapper-2.43.1", true},
		{"bash-5.2p37", "bash-5.2p37", false},
		{"riscv64-unknown-linux-gnu-gcc-13.3.0", "riscv64-unknown-linux-gnu-gcc-13.3.0", false},
		{suffix + "-", suffix + "-", false},
	}
	for _, tt := range tests {
		if got, marked := PairingName(tt.name, suffix); got != tt.want || marked != tt.marked {
			t.Errorf("PairingName(%q) = %q, %v; want %q, %v", tt.name, got, marked, tt.want, tt.marked)
		}
	}
	if got := nativeAlias("xgcc-13.3.0"); got != "gcc-13.3.0" {
		t.Errorf("nativeAlias(xgcc-13.3.0) = %q", got)
	}
}

// A place shared by different packages must not pair them: dependency
// lists, a common template, a fixed-output input. The input fails and the
// failure names the native input found in its place, if any, so the user
// can settle it with --pair.
func TestStructureRefusesOtherPackages(t *testing.T) {
	tests := []struct {
		name          string
		native, cross []spec
		key, nkey     string // cross input that must fail; native candidate ("" for none)
	}{
		{
			name: "singleton dependency list",
			native: []spec{
				{key: "idn", name: "libidn2-2.3.7"},
				{key: "hello", name: "hello-2.12", inputs: []string{"idn"}, env: map[string]string{"buildInputs": "{idn.out}"}},
			},
			cross: []spec{
				{key: "foo", name: "libfoo" + sfx + "1.0"},
				{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"foo"}, env: map[string]string{"buildInputs": "{foo.out}"}},
			},
			key: "foo",
		},
		{
			name: "common template, versions differ",
			native: []spec{
				{key: "zlib", name: "zlib-1.3"},
				{key: "idn", name: "libidn2-2.3.7"},
				{key: "hello", name: "hello-2.12", inputs: []string{"zlib", "idn"}, env: map[string]string{
					"NIX_CFLAGS_COMPILE": "-O2 -I{idn.out}/include", "buildInputs": "{zlib.out} {idn.out}"}},
			},
			cross: []spec{
				{key: "zlib", name: "zlib" + sfx + "1.3"},
				{key: "foo", name: "libfoo" + sfx + "1.0"},
				{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"zlib", "foo"}, env: map[string]string{
					"NIX_CFLAGS_COMPILE": "-O2 -I{foo.out}/include", "buildInputs": "{zlib.out} {foo.out}"}},
			},
			key: "foo", nkey: "idn",
		},
		{
			name: "fixed-output native input",
			native: []spec{
				{key: "src", name: "hello-2.12.tar.gz", fod: true},
				{key: "hello", name: "hello-2.12", inputs: []string{"src"}, env: map[string]string{"src": "{src.out}"}},
			},
			cross: []spec{
				{key: "src", name: "hello-src-patched"},
				{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"src"}, env: map[string]string{"src": "{src.out}"}},
			},
			key: "src",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, c := graphOf(t, "native", tt.native), graphOf(t, "cross", tt.cross)
			p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.NativeOf(c.drv[tt.key])
			if err == nil {
				t.Fatalf("%s paired with %s", tt.key, got)
			}
			if _, path, by, err := p.OutputOf(c.out[tt.key]["out"]); err == nil {
				t.Fatalf("%s.out paired with %s by %s", tt.key, path, by)
			}
			var f Failure
			if !errors.As(err, &f) {
				t.Fatalf("error %v is not a Failure", err)
			}
			if tt.nkey != "" && !contains(f.Candidates, n.drv[tt.nkey]) {
				t.Errorf("candidates %v lack %s: %v", f.Candidates, n.drv[tt.nkey], err)
			}
		})
	}
}

// An output placed where the name's output sits by one parent and where
// another output sits by another is a conflict, not the renamed output.
func TestStructureOutputConflict(t *testing.T) {
	n := graphOf(t, "native", []spec{
		{key: "gcc", name: "gcc-13.3.0", outputs: []string{"out", "lib", "libgcc"}},
		{key: "glibc", name: "glibc-2.40", inputs: []string{"gcc:libgcc"}, env: map[string]string{"makeFlags": "user-defined-trusted-dirs={gcc.libgcc}/lib"}},
		{key: "hello", name: "hello-2.12", inputs: []string{"gcc:lib", "glibc"}, env: map[string]string{"LIBSTDCXX": "{gcc.lib}/lib"}},
	})
	c := graphOf(t, "cross", []spec{
		{key: "gcc", name: suffix + "-gcc-13.3.0", outputs: []string{"out", "lib"}},
		{key: "glibc", name: "glibc" + sfx + "2.40", inputs: []string{"gcc:lib"}, env: map[string]string{"makeFlags": "user-defined-trusted-dirs={gcc.lib}/lib"}},
		{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{"gcc:lib", "glibc"}, env: map[string]string{"LIBSTDCXX": "{gcc.lib}/lib"}},
	})
	p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, _, by, err := p.OutputOf(c.out["gcc"]["lib"])
	if err == nil {
		t.Fatalf("gcc.lib paired with %s by %s", ref, by)
	}
	for _, o := range []string{"lib", "libgcc"} {
		if !strings.Contains(err.Error(), n.out["gcc"][o]) {
			t.Errorf("error lacks the candidate %s: %v", n.out["gcc"][o], err)
		}
	}
}

// The inputs of a derivation that parents pair with several natives fail:
// which native's inputs they would follow is only the order of the walk.
// Several key pairs give several .drv hash orders.
func TestConflictTaintsInputs(t *testing.T) {
	for _, keys := range [][2]string{{"a", "b"}, {"x", "y"}, {"k1", "k2"}, {"m", "n"}} {
		a, b := keys[0], keys[1]
		n := graphOf(t, "native", []spec{
			{key: "c1", name: "child-1.0"},
			{key: "c2", name: "child-1.0"},
			{key: "p1", name: "mid-1.0", inputs: []string{"c1"}},
			{key: "p2", name: "mid-1.0", inputs: []string{"c2"}},
			{key: a, name: "aaa-1.0", inputs: []string{"p1"}},
			{key: b, name: "bbb-1.0", inputs: []string{"p2"}},
			{key: "hello", name: "hello-2.12", inputs: []string{a, b}},
		})
		c := graphOf(t, "cross", []spec{
			{key: "c", name: "child" + sfx + "1.0"},
			{key: "p", name: "mid" + sfx + "1.0", inputs: []string{"c"}},
			{key: a, name: "aaa" + sfx + "1.0", inputs: []string{"p"}},
			{key: b, name: "bbb" + sfx + "1.0", inputs: []string{"p"}},
			{key: "hello", name: "hello" + sfx + "2.12", inputs: []string{a, b}},
		})
		p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := p.NativeOf(c.drv["p"]); err == nil {
			t.Errorf("keys %v: conflicted mid paired with %s", keys, got)
		}
		got, err := p.NativeOf(c.drv["c"])
		if err == nil {
			t.Errorf("keys %v: child of a conflicted derivation paired with %s", keys, got)
			continue
		}
		if !strings.Contains(err.Error(), "several native derivations") {
			t.Errorf("keys %v: error does not say why: %v", keys, err)
		}
		if _, path, _, err := p.OutputOf(c.out["c"]["out"]); err == nil {
			t.Errorf("keys %v: child's output paired with %s", keys, path)
		}
	}
}
