package pairing

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/decross-store/decross-store/upstream"
)

// Root pairs a native derivation with the cross derivation built for it.
type Root struct {
	Native string `json:"native"` // .drv path
	Cross  string `json:"cross"`  // .drv path
}

// Options tune pairing and mapping.
type Options struct {
	// HostSuffix is the host platform config nixpkgs appends to cross
	// names ("aarch64-unknown-linux-gnu", leading dash optional). Inferred
	// from the roots' names when empty.
	HostSuffix string
	// AllowBuildPlatform pairs build-platform derivations (x86_64 tools)
	// with the native derivation of the same name. Their bytes differ, so a
	// native path served from them is not what a native build would give.
	AllowBuildPlatform bool
	// Derivations is where Map and Check read .drv files; nil reads them
	// through the store they are given.
	Derivations DrvSource
	// HostSystem is the Nix system the native paths are for
	// ("aarch64-linux"): what ELF files of host paths hold. When empty, Map
	// takes the native roots' system and Check the mapping's, or infers it.
	HostSystem string
	// BuildSystem is the Nix system the cross paths were built on
	// ("x86_64-linux"). When empty, Map takes the cross roots' system and
	// Check the mapping's, or infers it.
	BuildSystem string
}

func (o Options) drvSource(store upstream.Reader) DrvSource {
	if o.Derivations != nil {
		return o.Derivations
	}
	return StoreSource{Store: store}
}

// Build-platform and host-platform dependency attributes of nixpkgs'
// stdenv.mkDerivation. An input whose outputs appear only in the former is
// a build-platform input.
var (
	buildDepVars = []string{"depsBuildBuild", "depsBuildBuildPropagated", "nativeBuildInputs",
		"propagatedNativeBuildInputs", "depsBuildTarget", "depsBuildTargetPropagated"}
	hostDepVars = []string{"depsHostHost", "depsHostHostPropagated", "buildInputs",
		"propagatedBuildInputs", "depsTargetTarget", "depsTargetTargetPropagated"}
)

// Failure says why a cross derivation has no native counterpart.
type Failure struct {
	Cross        string   // cross .drv that could not be paired
	Parent       string   // cross .drv it is an input of
	NativeParent string   // native .drv paired with Parent
	Reason       string   // "no candidate", "several candidates", "build-platform input"
	Candidates   []string // native .drv paths considered
}

func (f Failure) Error() string {
	msg := fmt.Sprintf("cannot pair %s (input of %s, paired with native %s): %s", f.Cross, f.Parent, f.NativeParent, f.Reason)
	if len(f.Candidates) > 0 {
		msg += " (" + strings.Join(f.Candidates, ", ") + ")"
	}
	return msg
}

// Pairing is the result of Pair: which native derivation each cross
// derivation stands for.
type Pairing struct {
	HostSuffix string // without leading dash
	Native     *Graph
	Cross      *Graph

	pairs     map[string]string   // cross .drv -> native .drv
	via       map[string]string   // cross .drv -> cross parent that paired it ("" for roots)
	conflicts map[string][]string // cross .drv -> further native proposals
	failures  map[string][]Failure
	buildOnly map[string]bool // cross .drv reachable from the roots only through build-platform inputs
}

// Len is the number of paired derivations.
func (p *Pairing) Len() int { return len(p.pairs) }

// BuildOnly reports whether crossDrv is reachable from the cross roots only
// as a build-platform input (nativeBuildInputs and the like).
func (p *Pairing) BuildOnly(crossDrv string) bool { return p.buildOnly[crossDrv] }

// NativeOf returns the native derivation paired with crossDrv, or an error
// naming the derivation, its parent and why it has none.
func (p *Pairing) NativeOf(crossDrv string) (string, error) {
	n, ok := p.pairs[crossDrv]
	if ok && len(p.conflicts[crossDrv]) == 0 {
		return n, nil
	}
	if ok {
		c := append([]string{n}, p.conflicts[crossDrv]...)
		sort.Strings(c)
		return "", fmt.Errorf("cannot pair %s: different parents pair it with several native derivations (%s)", crossDrv, strings.Join(c, ", "))
	}
	fs := p.failures[crossDrv]
	if len(fs) == 0 {
		return "", fmt.Errorf("cannot pair %s: not reached from the roots through derivations that pair", crossDrv)
	}
	return "", fs[0]
}

// Pair walks the cross and native graphs from roots and pairs derivations
// input by input.
func Pair(native, cross *Graph, roots []Root, opts Options) (*Pairing, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("pair: no roots")
	}
	suffix := strings.TrimPrefix(opts.HostSuffix, "-")
	for _, r := range roots {
		nd, ok := native.Derivation(r.Native)
		if !ok {
			return nil, fmt.Errorf("pair: native root %s is not in the native graph", r.Native)
		}
		cd, ok := cross.Derivation(r.Cross)
		if !ok {
			return nil, fmt.Errorf("pair: cross root %s is not in the cross graph", r.Cross)
		}
		if opts.HostSuffix != "" {
			continue
		}
		s, err := InferHostSuffix(nd.Name(), cd.Name())
		if err != nil {
			return nil, fmt.Errorf("pair: roots %s and %s: %w", r.Native, r.Cross, err)
		}
		if s != "" && suffix != "" && s != suffix {
			return nil, fmt.Errorf("pair: roots disagree on the host suffix (%q and %q); pass it explicitly", suffix, s)
		}
		if s != "" {
			suffix = s
		}
	}
	if suffix == "" {
		s, err := inferFromInputs(native, cross, roots)
		if err != nil {
			return nil, fmt.Errorf("pair: cannot infer the host suffix: %w; pass it explicitly", err)
		}
		suffix = s
	}
	p := &Pairing{
		HostSuffix: suffix,
		Native:     native,
		Cross:      cross,
		pairs:      map[string]string{},
		via:        map[string]string{},
		conflicts:  map[string][]string{},
		failures:   map[string][]Failure{},
	}
	type job struct{ native, cross string }
	var queue []job
	propose := func(c, n, parent string) {
		if prev, ok := p.pairs[c]; ok {
			if prev != n && !contains(p.conflicts[c], n) {
				p.conflicts[c] = append(p.conflicts[c], n)
			}
			return
		}
		p.pairs[c] = n
		p.via[c] = parent
		queue = append(queue, job{n, c})
	}
	for _, r := range roots {
		propose(r.Cross, r.Native, "")
	}
	for len(queue) > 0 {
		j := queue[0]
		queue = queue[1:]
		nd, _ := native.Derivation(j.native)
		cd, _ := cross.Derivation(j.cross)
		var nativeByName map[string][]string
		var crossRoles map[string]role
		for _, ci := range sortedKeys(cd.InputDerivations) {
			cid, _ := cross.Derivation(ci)
			if isFixedOutput(cid) {
				continue // same output path on both sides
			}
			if crossRoles == nil {
				crossRoles = roles(cd)
			}
			if edgeRole(crossRoles, cid, cd.InputDerivations[ci]) == roleBuild && !opts.AllowBuildPlatform {
				p.fail(Failure{Cross: ci, Parent: j.cross, NativeParent: j.native, Reason: "build-platform input; pairing it by name needs the build-platform option"})
				continue
			}
			if nativeByName == nil {
				nativeByName = map[string][]string{}
				for _, ni := range sortedKeys(nd.InputDerivations) {
					nid, _ := native.Derivation(ni)
					if !isFixedOutput(nid) {
						nativeByName[nid.Name()] = append(nativeByName[nid.Name()], ni)
					}
				}
			}
			want, _ := NormalizeName(cid.Name(), suffix)
			cands := nativeByName[want]
			if len(cands) > 1 {
				cands = tieBreak(p, cd, ci, nd, cands)
			}
			switch len(cands) {
			case 1:
				propose(ci, cands[0], j.cross)
			case 0:
				p.fail(Failure{Cross: ci, Parent: j.cross, NativeParent: j.native,
					Reason: fmt.Sprintf("no candidate: no input of the native derivation is named %q", want)})
			default:
				p.fail(Failure{Cross: ci, Parent: j.cross, NativeParent: j.native,
					Reason: fmt.Sprintf("several candidates named %q, not told apart by output names, use in the environment, or inputs", want), Candidates: cands})
			}
		}
	}
	p.buildOnly = buildOnly(cross, roots)
	return p, nil
}

// inferFromInputs finds the host suffix when the roots carry none (a script
// package): it descends through inputs of equal names, level by level, and
// takes the suffix that most input names of the first informative level
// agree on.
func inferFromInputs(native, cross *Graph, roots []Root) (string, error) {
	type job struct{ n, c string }
	level := make([]job, 0, len(roots))
	for _, r := range roots {
		level = append(level, job{r.Native, r.Cross})
	}
	seen := map[string]bool{}
	for depth := 0; depth < 8 && len(level) > 0; depth++ {
		votes := map[string]int{}
		var next []job
		for _, j := range level {
			nd, _ := native.Derivation(j.n)
			cd, _ := cross.Derivation(j.c)
			byName := map[string]string{}
			for ni := range nd.InputDerivations {
				nid, _ := native.Derivation(ni)
				byName[nid.Name()] = ni
			}
			for ci := range cd.InputDerivations {
				cid, _ := cross.Derivation(ci)
				if ni, ok := byName[cid.Name()]; ok {
					if !seen[ci] {
						seen[ci] = true
						next = append(next, job{ni, ci})
					}
					continue
				}
				// Each native name this cross name could be, with one whole
				// segment run removed, votes for that run: linear in the
				// inputs, where trying every native name was quadratic.
				counted := map[string]bool{}
				segmentRemovals(cid.Name(), func(nn string) {
					if _, ok := byName[nn]; !ok || counted[nn] {
						return
					}
					counted[nn] = true
					if s, err := InferHostSuffix(nn, cid.Name()); err == nil && s != "" {
						votes[s]++
					}
				})
			}
		}
		best, bestN, tie := "", 0, false
		for _, s := range sortedKeys(votes) {
			switch n := votes[s]; {
			case n > bestN:
				best, bestN, tie = s, n, false
			case n == bestN:
				tie = true
			}
		}
		if tie {
			return "", fmt.Errorf("input names suggest several suffixes (%v)", votes)
		}
		if best != "" {
			return best, nil
		}
		level = next
	}
	return "", fmt.Errorf("no root or input pair differs by one")
}

// segmentRemovals calls fn with every name that is name without one run of
// whole dash-separated segments after its first: the names InferHostSuffix
// would accept as native for cross name name.
func segmentRemovals(name string, fn func(native string)) {
	for a := 1; a < len(name); a++ {
		if name[a] != '-' {
			continue
		}
		for b := a + 1; b <= len(name); b++ {
			if b < len(name) && name[b] != '-' {
				continue
			}
			if wholeSegments(name[a+1 : b]) {
				fn(name[:a] + name[b:])
			}
		}
	}
}

func (p *Pairing) fail(f Failure) {
	if len(p.failures[f.Cross]) < 4 {
		p.failures[f.Cross] = append(p.failures[f.Cross], f)
	}
}

// tieBreak narrows native candidates with the same name by graph position:
// the outputs the parent uses, where the parent's environment names them,
// then the names of their own inputs.
func tieBreak(p *Pairing, cd *derivation.Derivation, ci string, nd *derivation.Derivation, cands []string) []string {
	cid, _ := p.Cross.Derivation(ci)
	filters := []func(string) bool{
		func(ni string) bool {
			return strings.Join(cd.InputDerivations[ci], " ") == strings.Join(nd.InputDerivations[ni], " ")
		},
		func(ni string) bool {
			nid, _ := p.Native.Derivation(ni)
			return usage(cd, cid, cd.InputDerivations[ci]) == usage(nd, nid, nd.InputDerivations[ni])
		},
		func(ni string) bool {
			nid, _ := p.Native.Derivation(ni)
			return inputNames(p.Cross, cid, p.HostSuffix) == inputNames(p.Native, nid, "")
		},
	}
	for _, f := range filters {
		var keep []string
		for _, c := range cands {
			if f(c) {
				keep = append(keep, c)
			}
		}
		if len(keep) == 1 {
			return keep
		}
		if len(keep) > 1 {
			cands = keep
		}
	}
	return cands
}

// usage says where a derivation's environment and arguments mention the
// given outputs of an input: variable name and word index. The paths differ
// between the graphs, the positions do not.
func usage(parent, input *derivation.Derivation, outputs []string) string {
	var b strings.Builder
	for _, k := range sortedKeys(parent.Env) {
		for i, w := range strings.Fields(parent.Env[k]) {
			for _, o := range outputs {
				if out, ok := input.Outputs[o]; ok && strings.Contains(w, out.Path) {
					b.WriteString(k + "#" + strconv.Itoa(i) + "/" + o + " ")
				}
			}
		}
	}
	for ai, a := range parent.Arguments {
		for i, w := range strings.Fields(a) {
			for _, o := range outputs {
				if out, ok := input.Outputs[o]; ok && strings.Contains(w, out.Path) {
					b.WriteString("arg" + strconv.Itoa(ai) + "#" + strconv.Itoa(i) + "/" + o + " ")
				}
			}
		}
	}
	return b.String()
}

func inputNames(g *Graph, d *derivation.Derivation, suffix string) string {
	names := make([]string, 0, len(d.InputDerivations))
	for in := range d.InputDerivations {
		id, _ := g.Derivation(in)
		n := id.Name()
		if suffix != "" {
			n, _ = NormalizeName(n, suffix)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

type role int

const (
	roleOther role = iota
	roleHost
	roleBuild
)

// roles maps every word of d's dependency attributes to its platform role.
// The builder (a build-platform shell) is a build-platform input unless an
// attribute lists it as a host dependency too.
func roles(d *derivation.Derivation) map[string]role {
	r := map[string]role{}
	if p, ok := storePathPrefix(d.Builder); ok {
		r[p] = roleBuild
	}
	words := depAttrs(d)
	for _, k := range buildDepVars {
		for _, w := range words(k) {
			r[w] = roleBuild
		}
	}
	for _, k := range hostDepVars {
		for _, w := range words(k) {
			r[w] = roleHost
		}
	}
	return r
}

// depAttrs returns the words of d's dependency attributes: from the
// environment, or, for derivations with __structuredAttrs, from the JSON
// nixpkgs passes in __json instead.
func depAttrs(d *derivation.Derivation) func(k string) []string {
	js, ok := d.Env["__json"]
	if !ok {
		return func(k string) []string { return strings.Fields(d.Env[k]) }
	}
	var attrs map[string]json.RawMessage
	_ = json.Unmarshal([]byte(js), &attrs) // unparseable: no roles known
	return func(k string) []string {
		var list []string
		if json.Unmarshal(attrs[k], &list) == nil {
			return list
		}
		var str string
		if json.Unmarshal(attrs[k], &str) == nil {
			return strings.Fields(str)
		}
		return nil
	}
}

// storePathPrefix returns the /nix/store/<hash>-<name> that s starts with.
func storePathPrefix(s string) (string, bool) {
	const dir = "/nix/store/"
	if !strings.HasPrefix(s, dir) {
		return "", false
	}
	end := strings.IndexByte(s[len(dir):], '/')
	if end < 0 {
		return s, true
	}
	return s[:len(dir)+end], true
}

// edgeRole is roleBuild when every used output of input that d's dependency
// attributes list is listed as a build-platform dependency.
func edgeRole(rs map[string]role, input *derivation.Derivation, outputs []string) role {
	res := roleOther
	for _, o := range outputs {
		out, ok := input.Outputs[o]
		if !ok {
			continue
		}
		switch rs[out.Path] {
		case roleHost:
			return roleHost
		case roleBuild:
			res = roleBuild
		}
	}
	return res
}

// buildOnly finds the cross derivations reachable from the roots, but only
// through at least one build-platform edge.
func buildOnly(g *Graph, roots []Root) map[string]bool {
	host := map[string]bool{}
	all := map[string]bool{}
	walk := func(start []string, seen map[string]bool, skipBuild bool) {
		stack := append([]string(nil), start...)
		for _, s := range start {
			seen[s] = true
		}
		for len(stack) > 0 {
			c := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			d, _ := g.Derivation(c)
			var rs map[string]role
			if skipBuild {
				rs = roles(d)
			}
			for in, outs := range d.InputDerivations {
				if seen[in] {
					continue
				}
				if skipBuild {
					id, _ := g.Derivation(in)
					if edgeRole(rs, id, outs) == roleBuild {
						continue
					}
				}
				seen[in] = true
				stack = append(stack, in)
			}
		}
	}
	starts := make([]string, len(roots))
	for i, r := range roots {
		starts[i] = r.Cross
	}
	walk(starts, host, true)
	walk(starts, all, false)
	res := map[string]bool{}
	for c := range all {
		if !host[c] {
			res[c] = true
		}
	}
	return res
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
