package pairing

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// genSpec sizes a generated pair of derivation graphs.
type genSpec struct {
	packages int // host packages per side, in layers of width
	width    int
	tools    int // build-platform tools per side
	sources  int // fixed-output sources, shared by both sides
}

// genResult is a generated pair of graphs written as .drv files.
type genResult struct {
	dir          string
	native       string // root .drv
	cross        string // root .drv
	files        int    // .drv files written
	nativeDrvs   int    // derivations in the native closure
	crossDrvs    int
	hostPackages int // cross derivations Pair can pair, the root included
}

// drvWriter gives derivations their real paths, as Nix computes them, and
// writes them to dir.
type drvWriter struct {
	tb    testing.TB
	dir   string
	repl  map[string]string // .drv path -> hashDerivationModulo
	files int
}

// add fills in d's output paths and writes it; it returns its .drv path.
func (w *drvWriter) add(d *derivation.Derivation) string {
	w.tb.Helper()
	fixed := isFixedOutput(d)
	if !fixed {
		for o := range d.Outputs {
			d.Outputs[o].Path = ""
			d.Env[o] = ""
		}
	}
	outs, err := d.CalculateOutputPaths(w.repl)
	if err != nil {
		w.tb.Fatal(err)
	}
	for o, p := range outs {
		d.Outputs[o].Path = p
		d.Env[o] = p
	}
	p, err := d.DrvPath()
	if err != nil {
		w.tb.Fatal(err)
	}
	if _, done := w.repl[p]; done {
		return p // a fixed-output source both sides share
	}
	r, err := d.CalculateDrvReplacement(w.repl)
	if err != nil {
		w.tb.Fatal(err)
	}
	w.repl[p] = r
	f, err := os.Create(filepath.Join(w.dir, filepath.Base(p)))
	if err != nil {
		w.tb.Fatal(err)
	}
	if err := d.WriteDerivation(f); err != nil {
		w.tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		w.tb.Fatal(err)
	}
	w.files++
	return p
}

// genDrvDir writes a native and a cross graph shaped like nixpkgs: host
// packages in layers, each taking libraries from the layer below and a
// fixed-output source, some with dev and lib outputs, some libraries in
// two versions; build-platform tools in nativeBuildInputs, named alike on
// both sides; cross host packages carry the host suffix.
func genDrvDir(tb testing.TB, dir string, g genSpec) genResult {
	tb.Helper()
	w := &drvWriter{tb: tb, dir: dir, repl: map[string]string{}}
	builderScript := storePath("default-builder.sh", "default-builder.sh")
	words := []string{"lib", "py", "perl-", "gnu", "x", "rust-", "go-", "haskell-"}
	pname := func(i int) string {
		if i%50 == 1 { // a second version of the previous library
			i--
		}
		return fmt.Sprintf("%s%d", words[i%len(words)], i)
	}
	version := func(i int) string {
		if i%50 == 1 {
			return "2.0.1"
		}
		return fmt.Sprintf("1.%d.%d", i%7, i%3)
	}
	outputs := func(i int) []string {
		if i%5 == 0 {
			return []string{"dev", "lib", "out"}
		}
		return []string{"out"}
	}
	srcs := make([]string, g.sources)
	srcOut := make([]string, g.sources)
	for i := range srcs {
		h := sha256.Sum256([]byte(fmt.Sprint("src", i)))
		d := &derivation.Derivation{
			Outputs:          map[string]*derivation.Output{"out": {HashAlgorithm: "sha256", Hash: fmt.Sprintf("%x", h)}},
			InputDerivations: map[string][]string{},
			InputSources:     []string{builderScript},
			Platform:         "builtin",
			Builder:          "builtin:fetchurl",
			Env: map[string]string{"name": fmt.Sprintf("source%d-1.%d.tar.gz", i, i%9), "out": "",
				"url": fmt.Sprintf("https://example.org/dist/source%d.tar.gz", i), "outputHashMode": "flat",
				"outputHashAlgo": "sha256", "outputHash": fmt.Sprintf("%x", h), "preferLocalBuild": "1"},
		}
		srcs[i] = w.add(d)
		srcOut[i] = d.Outputs["out"].Path
	}
	side := func(system, hostSuffix string) (root string, n int) {
		mk := func(name string, outs []string, inputs map[string][]string, env map[string]string) (string, *derivation.Derivation) {
			d := &derivation.Derivation{
				Outputs:          map[string]*derivation.Output{},
				InputDerivations: inputs,
				InputSources:     []string{builderScript},
				Platform:         system,
				Builder:          "/nix/store/" + strings.Repeat("b", 32) + "-bash-5.2/bin/bash",
				Arguments:        []string{"-e", builderScript},
				Env:              env,
			}
			env["name"] = name
			env["system"] = system
			env["builder"] = d.Builder
			env["outputs"] = strings.Join(outs, " ")
			env["configurePhase"] = "./configure --prefix=$out --enable-shared --disable-static\n"
			env["buildPhase"] = "make -j$NIX_BUILD_CORES\n"
			for _, o := range outs {
				d.Outputs[o] = &derivation.Output{}
				env[o] = ""
			}
			n++
			return w.add(d), d
		}
		// Tools are build-platform derivations: their names carry no suffix.
		tools := make([]string, g.tools)
		toolOut := make([]string, g.tools)
		for i := range tools {
			inputs := map[string][]string{}
			var deps []string
			for j := 1; j <= 2 && i-j*7 >= 0; j++ {
				inputs[tools[i-j*7]] = []string{"out"}
				deps = append(deps, toolOut[i-j*7])
			}
			var d *derivation.Derivation
			tools[i], d = mk(fmt.Sprintf("tool%d-3.%d", i, i%5), []string{"out"}, inputs,
				map[string]string{"buildInputs": strings.Join(deps, " ")})
			toolOut[i] = d.Outputs["out"].Path
		}
		pkgs := make([]string, g.packages)
		pkgOut := make([]map[string]string, g.packages)
		for i := range pkgs {
			inputs := map[string][]string{}
			env := map[string]string{"pname": pname(i), "version": version(i)}
			var build, host []string
			if layer := i / g.width; layer > 0 {
				below := (layer - 1) * g.width
				for j := 0; j < 4; j++ {
					k := below + (i*7+j*13)%g.width
					if _, dup := inputs[pkgs[k]]; dup {
						continue
					}
					o := "out"
					if _, ok := pkgOut[k]["dev"]; ok {
						o = "dev"
					}
					inputs[pkgs[k]] = []string{o}
					host = append(host, pkgOut[k][o])
				}
			}
			for j := 0; j < 2; j++ {
				t := (i*3 + j*11) % g.tools
				inputs[tools[t]] = []string{"out"}
				build = append(build, toolOut[t])
			}
			s := (i / 4) % g.sources
			inputs[srcs[s]] = []string{"out"}
			env["src"] = srcOut[s]
			env["buildInputs"] = strings.Join(host, " ")
			env["nativeBuildInputs"] = strings.Join(build, " ")
			var d *derivation.Derivation
			pkgs[i], d = mk(pname(i)+hostSuffix+"-"+version(i), outputs(i), inputs, env)
			pkgOut[i] = map[string]string{}
			for o, out := range d.Outputs {
				pkgOut[i][o] = out.Path
			}
		}
		inputs := map[string][]string{}
		var host []string
		for i := g.packages - g.width; i < g.packages; i++ {
			inputs[pkgs[i]] = []string{"out"}
			host = append(host, pkgOut[i]["out"])
		}
		root, _ = mk("hello"+hostSuffix+"-2.12.1", []string{"out"}, inputs, map[string]string{"buildInputs": strings.Join(host, " ")})
		return root, n + g.sources
	}
	r := genResult{dir: dir, hostPackages: g.packages + 1}
	r.native, r.nativeDrvs = side("aarch64-linux", "")
	r.cross, r.crossDrvs = side("x86_64-linux", "-"+suffix)
	r.files = w.files
	return r
}

// sortedDrvPaths lists the derivations of g.
func sortedDrvPaths(g *Graph) []string {
	ps := make([]string, 0, g.Len())
	for p := range g.drvs {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// BenchmarkInferSuffixFanIn: a root without the host suffix (a buildEnv of
// 4,000 host packages) makes Pair infer the suffix from input names.
func BenchmarkInferSuffixFanIn(b *testing.B) {
	const n = 4000
	var ns, cs []spec
	root := spec{key: "root", name: "system-path"}
	for i := range n {
		k := fmt.Sprint(i)
		ns = append(ns, spec{key: k, name: fmt.Sprintf("pkg%d-1.%d", i, i)})
		cs = append(cs, spec{key: k, name: fmt.Sprintf("pkg%d-%s-1.%d", i, suffix, i)})
		root.inputs = append(root.inputs, k)
	}
	native := graphOf(b, "native", append(ns, root))
	cross := graphOf(b, "cross", append(cs, root))
	roots := []Root{{Native: native.drv["root"], Cross: cross.drv["root"]}}
	for b.Loop() {
		p, err := Pair(native.Graph, cross.Graph, roots, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if p.HostSuffix != suffix || p.Len() != n+1 {
			b.Fatalf("suffix %q, %d pairs", p.HostSuffix, p.Len())
		}
	}
}
