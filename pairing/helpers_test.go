package pairing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/pathinfo"
	"github.com/nix-community/go-nix/pkg/derivation"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

const suffix = "aarch64-unknown-linux-gnu"

// storePath makes a well-formed store path whose hash depends on seed.
func storePath(seed, name string) string {
	h := sha256.Sum256([]byte(seed))
	return "/nix/store/" + nixbase32.EncodeToString(h[:20]) + "-" + name
}

// spec describes one derivation of a hand-made graph.
type spec struct {
	key     string   // unique within a graph
	name    string   // derivation name
	outputs []string // default: out
	inputs  []string // "key" (uses out) or "key:dev,lib"
	fod     bool     // fixed-output: the out path is the same in every graph
	env     map[string]string
	builder string // default /bin/sh; may name an output as {key.output}
}

type testGraph struct {
	*Graph
	drv  map[string]string            // key -> .drv path
	out  map[string]map[string]string // key -> output -> path
	drvs map[string]*derivation.Derivation
}

// testSystem is the system of a test graph's derivations: native ones
// are built on the host (aarch64), others on the build platform (x86_64).
func testSystem(side string) string {
	if side == "native" {
		return "aarch64-linux"
	}
	return "x86_64-linux"
}

// graphOf builds a graph from specs. Env values may name outputs as
// {key.output}, replaced by their paths.
func graphOf(t testing.TB, side string, specs []spec) *testGraph {
	t.Helper()
	g := &testGraph{drv: map[string]string{}, out: map[string]map[string]string{}, drvs: map[string]*derivation.Derivation{}}
	for _, s := range specs {
		seed := side + "/" + s.key
		if s.fod {
			seed = "fod/" + s.name
		}
		g.drv[s.key] = storePath(side+"/"+s.key+"/drv", s.name+".drv")
		g.out[s.key] = map[string]string{}
		outs := s.outputs
		if len(outs) == 0 {
			outs = []string{"out"}
		}
		for _, o := range outs {
			n := s.name
			if o != "out" {
				n += "-" + o
			}
			g.out[s.key][o] = storePath(seed+"/"+o, n)
		}
	}
	var repl []string
	for k, outs := range g.out {
		for o, p := range outs {
			repl = append(repl, "{"+k+"."+o+"}", p)
		}
	}
	r := strings.NewReplacer(repl...)
	for _, s := range specs {
		d := &derivation.Derivation{
			Outputs:          map[string]*derivation.Output{},
			InputSources:     []string{},
			InputDerivations: map[string][]string{},
			Platform:         testSystem(side),
			Builder:          "/bin/sh",
			Env:              map[string]string{"name": s.name},
		}
		for o, p := range g.out[s.key] {
			d.Outputs[o] = &derivation.Output{Path: p}
			d.Env[o] = p
		}
		if s.fod {
			d.Outputs["out"].HashAlgorithm = "sha256"
			d.Outputs["out"].Hash = strings.Repeat("0", 64)
		}
		for _, in := range s.inputs {
			k, outs, _ := strings.Cut(in, ":")
			if outs == "" {
				outs = "out"
			}
			p, ok := g.drv[k]
			if !ok {
				t.Fatalf("spec %s: unknown input %s", s.key, k)
			}
			os := strings.Split(outs, ",")
			sort.Strings(os)
			d.InputDerivations[p] = os
		}
		for k, v := range s.env {
			d.Env[k] = r.Replace(v)
		}
		if s.builder != "" {
			d.Builder = r.Replace(s.builder)
		}
		g.drvs[g.drv[s.key]] = d
	}
	gr, err := NewGraph(g.drvs)
	if err != nil {
		t.Fatal(err)
	}
	g.Graph = gr
	return g
}

// memStore is an in-memory upstream store: path infos and NARs.
type memStore struct {
	infos map[string]*pathinfo.PathInfo
	nars  map[string][]byte
}

func newMemStore() *memStore {
	return &memStore{infos: map[string]*pathinfo.PathInfo{}, nars: map[string][]byte{}}
}

func (m *memStore) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	if i, ok := m.infos[p]; ok {
		return i.Clone(), nil
	}
	return nil, nil
}

func (m *memStore) NarFromPath(_ context.Context, p string) (io.ReadCloser, error) {
	b, ok := m.nars[p]
	if !ok {
		return nil, fmt.Errorf("path %s is not valid", p)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// file is one entry of a NAR built by addPath.
type file struct {
	path   string // "/" for a single-file NAR
	data   []byte
	target string // symlink target when set
	dir    bool
}

// addPath stores a path with the given files, references and CA.
func (m *memStore) addPath(t testing.TB, p string, refs []string, ca string, files ...file) {
	t.Helper()
	var buf bytes.Buffer
	w, err := nar.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		h := &nar.Header{Path: f.path, Type: nar.TypeRegular, Size: int64(len(f.data))}
		switch {
		case f.dir:
			h = &nar.Header{Path: f.path, Type: nar.TypeDirectory}
		case f.target != "":
			h = &nar.Header{Path: f.path, Type: nar.TypeSymlink, LinkTarget: f.target}
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Type == nar.TypeRegular {
			if _, err := w.Write(f.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	refs = append([]string(nil), refs...)
	sort.Strings(refs)
	m.infos[p] = &pathinfo.PathInfo{Path: p, NarHash: sha256.Sum256(buf.Bytes()), NarSize: uint64(buf.Len()), References: refs, CA: ca}
	m.nars[p] = buf.Bytes()
}

// addDrvs stores the derivations of g as .drv files.
func (m *memStore) addDrvs(t testing.TB, g *testGraph) {
	t.Helper()
	for p, d := range g.drvs {
		var b bytes.Buffer
		if err := d.WriteDerivation(&b); err != nil {
			t.Fatal(err)
		}
		var refs []string
		for in := range d.InputDerivations {
			refs = append(refs, in)
		}
		m.addPath(t, p, refs, "text:sha256:"+strings.Repeat("1", 52), file{path: "/", data: b.Bytes()})
	}
}
