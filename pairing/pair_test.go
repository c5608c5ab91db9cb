package pairing

import (
	"fmt"
	"strings"
	"testing"
)

// sides returns a native and a cross graph of the same packages: cross
// names get the host suffix unless noSuffix lists the key.
func sides(t testing.TB, specs []spec, noSuffix ...string) (native, cross *testGraph) {
	t.Helper()
	skip := map[string]bool{}
	for _, k := range noSuffix {
		skip[k] = true
	}
	cs := make([]spec, len(specs))
	for i, s := range specs {
		cs[i] = s
		if !s.fod && !skip[s.key] {
			cs[i].name = crossName(s.name)
		}
	}
	return graphOf(t, "native", specs), graphOf(t, "cross", cs)
}

// crossName inserts the suffix before the version, as make-derivation.nix.
func crossName(n string) string {
	i := strings.LastIndex(n, "-")
	return n[:i] + "-" + suffix + n[i:]
}

func TestPair(t *testing.T) {
	base := []spec{
		{key: "glibc", name: "glibc-2.36"},
		{key: "libbase", name: "libbase-2.0", inputs: []string{"glibc"}},
		{key: "data", name: "greet-data-1.0"},
		{key: "libgreet", name: "libgreet-0.3", outputs: []string{"out", "lib", "dev"}, inputs: []string{"libbase", "glibc", "data"}},
		{key: "src", name: "hello-2.12.c", fod: true},
		{key: "hello", name: "hello-2.12", inputs: []string{"libgreet:dev,lib", "src", "glibc"}},
	}
	type want = map[string]string // cross key -> native key, or "!substring" of the error
	tests := []struct {
		name        string
		native      []spec // when set, the native side differs from base
		cross       []spec // when set, the cross side differs from base
		noSuffix    []string
		opts        Options
		want        want
		wantPairErr string
	}{
		{
			name:     "chain with multiple outputs, data and a fixed-output source",
			noSuffix: []string{"data"},
			want:     want{"hello": "hello", "libgreet": "libgreet", "libbase": "libbase", "glibc": "glibc", "data": "data"},
		},
		{
			name: "two native candidates of one name, told apart by the outputs used",
			native: []spec{
				{key: "a", name: "libx-1.0", outputs: []string{"out", "dev"}},
				{key: "b", name: "libx-1.0"},
				{key: "hello", name: "hello-2.12", inputs: []string{"a:dev", "b"}},
			},
			cross: []spec{
				{key: "a", name: "libx-" + suffix + "-1.0", outputs: []string{"out", "dev"}},
				{key: "b", name: "libx-" + suffix + "-1.0"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"a:dev", "b"}},
			},
			want: want{"hello": "hello", "a": "a", "b": "b"},
		},
		{
			name: "same name, same outputs, told apart by where the environment uses them",
			native: []spec{
				{key: "a", name: "libx-1.0"},
				{key: "b", name: "libx-1.0"},
				{key: "hello", name: "hello-2.12", inputs: []string{"a", "b"}, env: map[string]string{"first": "{a.out}", "second": "{b.out}"}},
			},
			cross: []spec{
				{key: "a", name: "libx-" + suffix + "-1.0"},
				{key: "b", name: "libx-" + suffix + "-1.0"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"a", "b"}, env: map[string]string{"first": "{a.out}", "second": "{b.out}"}},
			},
			want: want{"hello": "hello", "a": "a", "b": "b"},
		},
		{
			name: "same name, told apart by their own inputs",
			native: []spec{
				{key: "z", name: "zlib-1.3"},
				{key: "a", name: "libx-1.0", inputs: []string{"z"}},
				{key: "b", name: "libx-1.0"},
				{key: "hello", name: "hello-2.12", inputs: []string{"a", "b"}},
			},
			cross: []spec{
				{key: "z", name: "zlib-" + suffix + "-1.3"},
				{key: "a", name: "libx-" + suffix + "-1.0", inputs: []string{"z"}},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"a"}},
			},
			want: want{"hello": "hello", "a": "a", "z": "z"},
		},
		{
			name: "ambiguous: nothing tells the candidates apart",
			native: []spec{
				{key: "a", name: "libx-1.0"},
				{key: "b", name: "libx-1.0"},
				{key: "hello", name: "hello-2.12", inputs: []string{"a", "b"}},
			},
			cross: []spec{
				{key: "a", name: "libx-" + suffix + "-1.0"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"a"}},
			},
			want: want{"hello": "hello", "a": "!several candidates named \"libx-1.0\""},
		},
		{
			name: "unpaired: no native input of that name",
			native: []spec{
				{key: "hello", name: "hello-2.12"},
			},
			cross: []spec{
				{key: "extra", name: "libextra-" + suffix + "-1.0"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"extra"}},
			},
			want: want{"hello": "hello", "extra": "!no candidate: no input of the native derivation is named \"libextra-1.0\""},
		},
		{
			name: "build-platform input is not paired by name",
			native: []spec{
				{key: "perl", name: "perl-5.38"},
				{key: "hello", name: "hello-2.12", inputs: []string{"perl"}, env: map[string]string{"nativeBuildInputs": "{perl.out}"}},
			},
			cross: []spec{
				{key: "perl", name: "perl-5.38"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"perl"}, env: map[string]string{"nativeBuildInputs": "{perl.out}"}},
			},
			want: want{"hello": "hello", "perl": "!build-platform input"},
		},
		{
			name: "build-platform input paired when allowed",
			native: []spec{
				{key: "perl", name: "perl-5.38"},
				{key: "hello", name: "hello-2.12", inputs: []string{"perl"}, env: map[string]string{"nativeBuildInputs": "{perl.out}"}},
			},
			cross: []spec{
				{key: "perl", name: "perl-5.38"},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"perl"}, env: map[string]string{"nativeBuildInputs": "{perl.out}"}},
			},
			opts: Options{AllowBuildPlatform: true},
			want: want{"hello": "hello", "perl": "perl"},
		},
		{
			name: "conflict: two parents pair one cross derivation differently",
			native: []spec{
				{key: "x1", name: "libx-1.0"},
				{key: "x2", name: "libx-1.0"},
				{key: "p", name: "p-1.0", inputs: []string{"x1"}},
				{key: "q", name: "q-1.0", inputs: []string{"x2"}},
				{key: "hello", name: "hello-2.12", inputs: []string{"p", "q"}},
			},
			cross: []spec{
				{key: "x", name: "libx-" + suffix + "-1.0"},
				{key: "p", name: "p-" + suffix + "-1.0", inputs: []string{"x"}},
				{key: "q", name: "q-" + suffix + "-1.0", inputs: []string{"x"}},
				{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"p", "q"}},
			},
			want: want{"hello": "hello", "p": "p", "q": "q", "x": "!several native derivations"},
		},
		{
			name:        "explicit suffix that the roots do not carry",
			opts:        Options{HostSuffix: "riscv64-unknown-linux-gnu"},
			noSuffix:    []string{"data"},
			want:        want{"hello": "hello", "data": "!not reached from the roots", "libgreet": "!no candidate", "glibc": "!no candidate", "libbase": "!not reached"},
			wantPairErr: "",
		},
		{
			name: "suffix inferred from the inputs of a root without one",
			native: []spec{
				{key: "lib", name: "libx-1.0"},
				{key: "data", name: "data-1.0"},
				{key: "hello", name: "wrapper-1.0", inputs: []string{"lib", "data"}},
			},
			cross: []spec{
				{key: "lib", name: "libx-" + suffix + "-1.0"},
				{key: "data", name: "data-1.0"},
				{key: "hello", name: "wrapper-1.0", inputs: []string{"lib", "data"}},
			},
			want: want{"hello": "hello", "lib": "lib", "data": "data"},
		},
		{
			name:        "no suffix to infer",
			native:      []spec{{key: "hello", name: "hello-2.12"}},
			cross:       []spec{{key: "hello", name: "hello-2.12"}},
			wantPairErr: "cannot infer the host suffix: no root or input pair differs by one",
		},
		{
			name:        "roots that are not the same package",
			native:      []spec{{key: "hello", name: "hello-2.12"}},
			cross:       []spec{{key: "hello", name: "goodbye-" + suffix + "-2.12"}},
			wantPairErr: "is not native name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n, c *testGraph
			if tt.native == nil {
				n, c = sides(t, base, tt.noSuffix...)
			} else {
				n, c = graphOf(t, "native", tt.native), graphOf(t, "cross", tt.cross)
			}
			p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, tt.opts)
			if tt.wantPairErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantPairErr) {
					t.Fatalf("Pair err = %v, want one containing %q", err, tt.wantPairErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for ck, nk := range tt.want {
				got, err := p.NativeOf(c.drv[ck])
				if strings.HasPrefix(nk, "!") {
					if err == nil || !strings.Contains(err.Error(), nk[1:]) || !strings.Contains(err.Error(), c.drv[ck]) {
						t.Errorf("NativeOf(%s) = %s, %v; want an error naming it and containing %q", ck, got, err, nk[1:])
					}
					continue
				}
				if err != nil || got != n.drv[nk] {
					t.Errorf("NativeOf(%s) = %s, %v; want %s", ck, got, err, n.drv[nk])
				}
			}
			// Fixed-output derivations need no pair.
			for k := range c.drv {
				if _, listed := tt.want[k]; !listed {
					if got, err := p.NativeOf(c.drv[k]); err == nil {
						t.Errorf("unexpected pair %s -> %s", k, got)
					}
				}
			}
		})
	}
}

func TestBuildOnly(t *testing.T) {
	c := graphOf(t, "cross", []spec{
		{key: "perl", name: "perl-5.38", inputs: []string{"zlib"}},
		{key: "zlib", name: "zlib-1.3"},
		{key: "zlibhost", name: "zlib-" + suffix + "-1.3"},
		{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"perl", "zlibhost", "data"},
			env: map[string]string{"nativeBuildInputs": "{perl.out}", "buildInputs": "{zlibhost.out}", "text": "{data.out}"}},
		{key: "data", name: "data-1.0"},
	})
	bo := buildOnly(c.Graph, []Root{{Cross: c.drv["hello"]}})
	for k, want := range map[string]bool{"perl": true, "zlib": true, "zlibhost": false, "hello": false, "data": false} {
		if bo[c.drv[k]] != want {
			t.Errorf("buildOnly(%s) = %v, want %v", k, bo[c.drv[k]], want)
		}
	}
}

func TestNewGraphErrors(t *testing.T) {
	g := graphOf(t, "x", []spec{{key: "a", name: "a-1"}, {key: "b", name: "b-1", inputs: []string{"a"}}})
	delete(g.drvs, g.drv["a"])
	if _, err := NewGraph(g.drvs); err == nil || !strings.Contains(err.Error(), "input derivation "+g.drv["a"]+" is not in the graph") {
		t.Errorf("NewGraph without an input: %v", err)
	}
}

// genGraphs makes a layered graph of n derivations per side: every
// derivation takes inputs from the layer below, names repeat across
// layers so pairing must rely on the graph.
func genGraphs(tb testing.TB, n int) (native, cross *testGraph) {
	tb.Helper()
	const width = 100
	specs := make([]spec, 0, n)
	for i := 0; i < n; i++ {
		s := spec{key: fmt.Sprint(i), name: fmt.Sprintf("pkg%d-1.0", i%(width*3))}
		if layer := i / width; layer > 0 {
			for j := 0; j < 4; j++ {
				s.inputs = append(s.inputs, fmt.Sprint((layer-1)*width+(i*7+j*13)%width))
			}
		}
		if i%10 == 0 {
			s.outputs = []string{"out", "dev"}
		}
		specs = append(specs, s)
	}
	// One root on top depending on the last layer.
	root := spec{key: "hello", name: "hello-2.12"}
	for i := n - width; i < n; i++ {
		root.inputs = append(root.inputs, fmt.Sprint(i))
	}
	return sides(tb, append(specs, root))
}

func TestPairGenerated(t *testing.T) {
	n, c := genGraphs(t, 2000)
	p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for k, cd := range c.drv {
		got, err := p.NativeOf(cd)
		if err != nil || got != n.drv[k] {
			t.Fatalf("NativeOf(%s) = %s, %v; want %s", k, got, err, n.drv[k])
		}
	}
}

func BenchmarkPair20000(b *testing.B) {
	n, c := genGraphs(b, 20000)
	roots := []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}
	b.ResetTimer()
	for b.Loop() {
		p, err := Pair(n.Graph, c.Graph, roots, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if p.Len() != 20001 {
			b.Fatalf("paired %d derivations, want 20001", p.Len())
		}
	}
}

// TestStructuredAttrsRoles: with __structuredAttrs, the dependency lists
// live in __json; a build-platform input listed there is not paired by
// name without the option, and counts as build-only.
func TestStructuredAttrsRoles(t *testing.T) {
	js := `{"nativeBuildInputs": ["{perl.out}"], "buildInputs": ["{zlib.out}"]}`
	n := graphOf(t, "native", []spec{
		{key: "perl", name: "perl-5.38"}, {key: "zlib", name: "zlib-1.3"},
		{key: "hello", name: "hello-2.12", inputs: []string{"perl", "zlib"}, env: map[string]string{"__json": js}},
	})
	c := graphOf(t, "cross", []spec{
		{key: "perl", name: "perl-5.38"}, {key: "zlib", name: "zlib-" + suffix + "-1.3"},
		{key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"perl", "zlib"}, env: map[string]string{"__json": js}},
	})
	p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.NativeOf(c.drv["perl"]); err == nil || !strings.Contains(err.Error(), "build-platform input") {
		t.Errorf("build-platform perl: paired with %q, err %v; want it refused", got, err)
	}
	if !p.BuildOnly(c.drv["perl"]) {
		t.Error("perl listed in __json's nativeBuildInputs is not build-only")
	}
	if got, err := p.NativeOf(c.drv["zlib"]); err != nil || got != n.drv["zlib"] {
		t.Errorf("host zlib: paired with %q, %v; want %s", got, err, n.drv["zlib"])
	}
}

// TestBuilderIsBuildPlatform: the builder (an x86_64 bash) is a
// build-platform input even when no dependency attribute lists it.
func TestBuilderIsBuildPlatform(t *testing.T) {
	n := graphOf(t, "native", []spec{{key: "bash", name: "bash-5.2"}, {key: "hello", name: "hello-2.12", inputs: []string{"bash"}, builder: "{bash.out}/bin/bash"}})
	c := graphOf(t, "cross", []spec{{key: "bash", name: "bash-5.2"}, {key: "hello", name: "hello-" + suffix + "-2.12", inputs: []string{"bash"}, builder: "{bash.out}/bin/bash"}})
	p, err := Pair(n.Graph, c.Graph, []Root{{Native: n.drv["hello"], Cross: c.drv["hello"]}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.NativeOf(c.drv["bash"]); err == nil {
		t.Errorf("x86_64 builder bash paired with native bash %s without the option", got)
	}
	if !p.BuildOnly(c.drv["bash"]) {
		t.Error("the builder is not build-only")
	}
}
