package pairing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/decross-store/decross-store/narstream"
	"github.com/decross-store/decross-store/upstream"
)

const (
	// MaxDrvSize bounds one .drv file; the largest in nixpkgs are a few
	// hundred KiB.
	MaxDrvSize = 32 << 20
	// MaxGraph bounds the number of derivations loaded into one graph; a
	// full nixpkgs cross closure is a few thousand.
	MaxGraph = 1 << 20
)

// ReadDerivation reads and parses the .drv at drvPath through store.
func ReadDerivation(ctx context.Context, store upstream.Reader, drvPath string) (*derivation.Derivation, error) {
	if _, err := checkDrvPath(drvPath); err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	rc, err := store.NarFromPath(ctx, drvPath)
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	defer rc.Close()
	drv, err := parseDrvNAR(rc)
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	return drv, nil
}

func parseDrvNAR(r io.Reader) (*derivation.Derivation, error) {
	nr := narstream.NewReader(r)
	h, err := nr.Next()
	if err != nil {
		return nil, err
	}
	if h.Type != narstream.TypeRegular || h.Path != "/" {
		return nil, fmt.Errorf("NAR does not hold a single regular file")
	}
	if h.Size > MaxDrvSize {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed for a derivation", h.Size, MaxDrvSize)
	}
	data, err := io.ReadAll(nr)
	if err != nil {
		return nil, err
	}
	// The NAR must end here: anything else is not the .drv file we asked for.
	if _, err := nr.Next(); err != io.EOF {
		if err == nil {
			err = errors.New("NAR holds more than one file")
		}
		return nil, err
	}
	drv, err := derivation.ReadDerivation(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return drv, nil
}

// OutputRef names one output of one derivation.
type OutputRef struct {
	Drv    string // .drv path
	Output string // "out", "lib", ...
}

// Graph is a closure of derivations under their input derivations.
type Graph struct {
	drvs    map[string]*derivation.Derivation
	outputs map[string]OutputRef // output path -> producer
	byName  map[string][]string  // derivation name -> .drv paths, sorted
}

// NewGraph indexes drvs (keyed by .drv path). Every input derivation must be
// present: a missing one would silently cut the graph.
func NewGraph(drvs map[string]*derivation.Derivation) (*Graph, error) {
	g := &Graph{
		drvs:    drvs,
		outputs: make(map[string]OutputRef, len(drvs)),
		byName:  make(map[string][]string, len(drvs)),
	}
	for p, d := range drvs {
		if d == nil {
			return nil, fmt.Errorf("derivation %s: nil", p)
		}
		for in := range d.InputDerivations {
			if _, ok := drvs[in]; !ok {
				return nil, fmt.Errorf("derivation %s: input derivation %s is not in the graph", p, in)
			}
		}
		for name, o := range d.Outputs {
			if o.Path == "" {
				return nil, fmt.Errorf("derivation %s: output %s has no path (content-addressed derivations are not supported)", p, name)
			}
			if prev, dup := g.outputs[o.Path]; dup {
				return nil, fmt.Errorf("derivation %s: output path %s is also output %s of %s", p, o.Path, prev.Output, prev.Drv)
			}
			g.outputs[o.Path] = OutputRef{Drv: p, Output: name}
		}
		g.byName[d.Name()] = append(g.byName[d.Name()], p)
	}
	for _, ps := range g.byName {
		sort.Strings(ps)
	}
	return g, nil
}

// LoadGraph reads roots and, transitively, their input derivations from
// src, several at a time. The graph does not depend on the order reads
// finish in, and neither does the error: when derivations cannot be read,
// the walk goes on without their inputs and reports the first failure in
// path order.
func LoadGraph(ctx context.Context, src DrvSource, roots ...string) (*Graph, error) {
	workers := 2 * runtime.GOMAXPROCS(0)
	type result struct {
		path string
		drv  *derivation.Derivation
		err  error
	}
	jobs := make(chan string)
	results := make(chan result, workers)
	// quit lets workers drop their result when the walk stops early: the
	// results buffer may be full of results nobody will read.
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				d, err := src.ReadDerivation(ctx, p)
				select {
				case results <- result{p, d, err}:
				case <-quit:
					return
				}
			}
		}()
	}
	stop := func() { close(quit); close(jobs); wg.Wait() }

	drvs := map[string]*derivation.Derivation{}
	seen := map[string]bool{}
	failed := map[string]error{}
	var queue []string
	tooMany := false
	enqueue := func(p string) {
		if seen[p] || tooMany {
			return
		}
		if len(seen) >= MaxGraph {
			tooMany = true
			return
		}
		seen[p] = true
		queue = append(queue, p)
	}
	for _, r := range roots {
		enqueue(r)
	}
	for pending := 0; len(queue) > 0 || pending > 0; {
		var send chan string
		var next string
		if len(queue) > 0 && !tooMany {
			send, next = jobs, queue[len(queue)-1]
		} else if pending == 0 {
			break
		}
		select {
		case send <- next:
			queue = queue[:len(queue)-1]
			pending++
		case r := <-results:
			pending--
			if r.err != nil {
				failed[r.path] = r.err
				continue
			}
			drvs[r.path] = r.drv
			for _, in := range sortedKeys(r.drv.InputDerivations) {
				enqueue(in)
			}
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("load derivations: %w", ctx.Err())
		}
	}
	stop()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load derivations: %w", err)
	}
	if tooMany {
		return nil, fmt.Errorf("load derivations: more than %d in the closure of %s", MaxGraph, strings.Join(roots, ", "))
	}
	if len(failed) > 0 {
		ps := sortedKeys(failed)
		err := fmt.Errorf("load derivations: %w", failed[ps[0]])
		if len(ps) > 1 {
			err = fmt.Errorf("%w (and %d more derivations that cannot be read)", err, len(ps)-1)
		}
		return nil, err
	}
	return NewGraph(drvs)
}

// Len is the number of derivations.
func (g *Graph) Len() int { return len(g.drvs) }

// Derivation returns the derivation at drvPath.
func (g *Graph) Derivation(drvPath string) (*derivation.Derivation, bool) {
	d, ok := g.drvs[drvPath]
	return d, ok
}

// Producer returns the derivation and output that produce path.
func (g *Graph) Producer(path string) (OutputRef, bool) {
	r, ok := g.outputs[path]
	return r, ok
}

// ByName returns the derivations called name, sorted.
func (g *Graph) ByName(name string) []string { return g.byName[name] }

func isFixedOutput(d *derivation.Derivation) bool {
	o, ok := d.Outputs["out"]
	return ok && len(d.Outputs) == 1 && o.HashAlgorithm != ""
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var errNotValid = errors.New("not valid in the upstream store")
