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
	// Pairs settle what the graphs cannot: each pairs a cross derivation
	// with a native one (two .drv paths) or a cross output with a native
	// output (two output paths). They are checked like derived pairs.
	Pairs []UserPair
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
	Reason       string   // no candidate, several candidates, evidence that disagrees, a build-platform input or namesake
	Candidates   []string // native .drv paths (or drv^output) considered
}

func (f Failure) Error() string {
	msg := fmt.Sprintf("cannot pair %s (input of %s, paired with native %s): %s", f.Cross, f.Parent, f.NativeParent, f.Reason)
	if len(f.Candidates) > 0 {
		msg += " (" + strings.Join(f.Candidates, ", ") + ")"
	}
	return msg
}

// Pairing is the result of Pair: which native derivation each cross
// derivation stands for, which native output each cross output stands for
// where that is not the output of the same name, and why.
type Pairing struct {
	HostSuffix string // without leading dash
	Native     *Graph
	Cross      *Graph

	pairs        map[string]string   // cross .drv -> native .drv
	pairedBy     map[string]Basis    // cross .drv -> why it was paired
	via          map[string]string   // cross .drv -> cross parent that paired it ("" for roots)
	conflicts    map[string][]string // cross .drv -> further native proposals
	outPairs     map[string]slot     // cross output path -> native output
	outConflicts map[string][]string // cross output path -> further native output proposals
	failures     map[string][]Failure
	buildOnly    map[string]bool // cross .drv reachable from the roots only through build-platform inputs
	problems     map[string]bool // with user pairs: contradicted or never reached
}

// Len is the number of paired derivations.
func (p *Pairing) Len() int { return len(p.pairs) }

// BuildOnly reports whether crossDrv is reachable from the cross roots only
// as a build-platform input (nativeBuildInputs and the like).
func (p *Pairing) BuildOnly(crossDrv string) bool { return p.buildOnly[crossDrv] }

// Problems lists what is wrong with the user's pairs: pairs that
// contradict what the graphs say, and pairs the walk never reached.
func (p *Pairing) Problems() []string { return sortedKeys(p.problems) }

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

// PairedBy says why crossDrv was paired; the zero Basis when it was not.
func (p *Pairing) PairedBy(crossDrv string) Basis { return p.pairedBy[crossDrv] }

// OutputOf returns the native output path cross output path c stands for
// and why: the output the structure of the parents put in its place, or
// else the output of the same name of the paired native derivation.
func (p *Pairing) OutputOf(c string) (OutputRef, string, Basis, error) {
	prod, ok := p.Cross.Producer(c)
	if !ok {
		return OutputRef{}, "", Basis{}, fmt.Errorf("no derivation in the cross graph produces it")
	}
	if op, ok := p.outPairs[c]; ok {
		if op.by.How != ByUser && len(p.conflicts[prod.Drv]) > 0 {
			// Parents disagree on the derivation: its outputs' places
			// settle nothing.
			_, err := p.NativeOf(prod.Drv)
			return OutputRef{}, "", Basis{}, err
		}
		if others := p.outConflicts[c]; len(others) > 0 {
			nd, _ := p.Native.Derivation(op.native.Drv)
			all := append([]string{nd.Outputs[op.native.Output].Path}, others...)
			sort.Strings(all)
			return OutputRef{}, "", Basis{}, fmt.Errorf("cannot pair %s: different parents pair it with several native outputs (%s)", c, strings.Join(all, ", "))
		}
		nd, _ := p.Native.Derivation(op.native.Drv)
		by := op.by
		if n, ok := p.pairs[prod.Drv]; ok && op.by.How != ByUser && n == op.native.Drv && op.native.Output == prod.Output {
			// A place that only confirms the derivation's own pair (a root
			// that another root also uses) does not explain it.
			by = p.pairedBy[prod.Drv]
		}
		return op.native, nd.Outputs[op.native.Output].Path, by, nil
	}
	n, err := p.NativeOf(prod.Drv)
	if err != nil {
		return OutputRef{}, "", Basis{}, err
	}
	nd, _ := p.Native.Derivation(n)
	out, ok := nd.Outputs[prod.Output]
	if !ok {
		return OutputRef{}, "", Basis{}, fmt.Errorf("it is output %q of %s, but the paired native derivation %s has no such output (paired by %s)", prod.Output, prod.Drv, n, p.pairedBy[prod.Drv])
	}
	return OutputRef{Drv: n, Output: prod.Output}, out.Path, p.pairedBy[prod.Drv], nil
}

// Pair walks the cross and native graphs from roots and pairs derivations
// input by input: by name, by the attribute or the place in an attribute
// where the parents hold them, or as opts.Pairs says.
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
		// A static set (pkgsStatic) names a package alike wherever it is
		// built, host config included: there is no suffix to remove, and
		// names compare as they are.
		if _, static := staticRoots(native, cross, roots, opts.HostSystem); err != nil && !static {
			return nil, fmt.Errorf("pair: cannot infer the host suffix: %w; pass it explicitly", err)
		}
		suffix = s
	}
	users, err := checkUserPairs(native, cross, opts.Pairs)
	if err != nil {
		return nil, fmt.Errorf("pair: %w", err)
	}
	p := &Pairing{
		HostSuffix:   suffix,
		Native:       native,
		Cross:        cross,
		pairs:        map[string]string{},
		pairedBy:     map[string]Basis{},
		via:          map[string]string{},
		conflicts:    map[string][]string{},
		outPairs:     map[string]slot{},
		outConflicts: map[string][]string{},
		failures:     map[string][]Failure{},
		problems:     map[string]bool{},
	}
	// A name marked as made for the host (suffix or target prefix) claims
	// its pairing name: an unmarked cross derivation of that name is a
	// build-platform namesake (bash-5.2p37 next to
	// bash-aarch64-unknown-linux-gnu-5.2p37), not its host counterpart.
	hostNames := map[string]string{}
	for _, name := range sortedKeys(cross.byName) {
		if pn, marked := PairingName(name, suffix); marked {
			if _, ok := hostNames[pn]; !ok {
				hostNames[pn] = cross.byName[name][0]
			}
		}
	}
	type job struct{ native, cross string }
	var queue []job
	children := map[string][]string{} // cross parent ("" for the roots) -> the inputs it proposed
	propose := func(c, n, parent string, by Basis) {
		children[parent] = append(children[parent], c)
		if prev, ok := p.pairs[c]; ok {
			if prev != n && !contains(p.conflicts[c], n) {
				p.conflicts[c] = append(p.conflicts[c], n)
			}
			return
		}
		p.pairs[c] = n
		p.pairedBy[c] = by
		p.via[c] = parent
		queue = append(queue, job{n, c})
	}
	proposeOut := func(c string, s slot) {
		if prev, ok := p.outPairs[c]; ok {
			if prev.native != s.native {
				nd, _ := native.Derivation(s.native.Drv)
				if np := nd.Outputs[s.native.Output].Path; !contains(p.outConflicts[c], np) {
					p.outConflicts[c] = append(p.outConflicts[c], np)
				}
			}
			return
		}
		p.outPairs[c] = s
	}
	for _, r := range roots {
		if up, ok := users.given[r.Cross]; ok {
			users.used[r.Cross] = true
			if u, ok := users.drv[r.Cross]; !ok || u.Native != r.Native {
				p.problems[fmt.Sprintf("--pair %s contradicts the root pair %s=%s", up, r.Cross, r.Native)] = true
			}
		}
		propose(r.Cross, r.Native, "", Basis{How: ByRoot})
	}
	for len(queue) > 0 {
		j := queue[0]
		queue = queue[1:]
		nd, _ := native.Derivation(j.native)
		cd, _ := cross.Derivation(j.cross)
		w := &walkStep{p: p, nd: nd, cd: cd, native: j.native, cross: j.cross}
		crossRoles := roles(cd)
		for _, ci := range sortedKeys(cd.InputDerivations) {
			cid, _ := cross.Derivation(ci)
			if isFixedOutput(cid) {
				continue // same output path on both sides
			}
			var d decision
			pn, marked := PairingName(cid.Name(), suffix)
			switch host := hostNames[pn]; {
			case edgeRole(crossRoles, cid, cd.InputDerivations[ci]) == roleBuild && !opts.AllowBuildPlatform:
				d.fail = &Failure{Cross: ci, Parent: j.cross, NativeParent: j.native, Reason: "build-platform input; pairing it by name needs the build-platform option"}
			case !marked && host != "" && host != ci && !opts.AllowBuildPlatform:
				d.fail = &Failure{Cross: ci, Parent: j.cross, NativeParent: j.native,
					Reason: fmt.Sprintf("build-platform namesake of the host derivation %s: only a derivation made for the host pairs with a native %q (pairing it needs the build-platform option)", host, pn)}
			default:
				d = w.decide(ci, cid, pn)
			}
			if _, ok := users.given[ci]; ok {
				w.applyUser(users, ci, cid, d, propose, proposeOut)
				continue
			}
			if d.fail != nil {
				p.fail(*d.fail)
				continue
			}
			propose(ci, d.native, j.cross, d.by)
			for _, o := range sortedKeys(d.outs) {
				proposeOut(cid.Outputs[o].Path, d.outs[o])
			}
		}
	}
	p.failTainted(children)
	for _, c := range sortedKeys(users.given) {
		if !users.used[c] {
			p.problems[fmt.Sprintf("--pair %s is never reached: %s is not an input of a paired derivation", users.given[c], c)] = true
		}
	}
	p.buildOnly = buildOnly(cross, roots)
	return p, nil
}

// walkStep pairs the inputs of one pair of derivations.
type walkStep struct {
	p               *Pairing
	nd, cd          *derivation.Derivation
	native, cross   string
	byName, byAlias map[string][]string // native inputs by name, by alias
	slots           map[string][]slot   // cross output path -> native outputs in its place
}

// decide weighs the evidence for cross input ci: a single native input of
// its pairing name, and the native outputs found in its places. They must
// agree; where names give no single candidate, places may decide.
func (w *walkStep) decide(ci string, cid *derivation.Derivation, pn string) decision {
	p := w.p
	if w.byName == nil {
		w.byName, w.byAlias = map[string][]string{}, map[string][]string{}
		for _, ni := range sortedKeys(w.nd.InputDerivations) {
			nid, _ := p.Native.Derivation(ni)
			if isFixedOutput(nid) {
				continue
			}
			w.byName[nid.Name()] = append(w.byName[nid.Name()], ni)
			if a := nativeAlias(nid.Name()); a != "" {
				w.byAlias[a] = append(w.byAlias[a], ni)
			}
		}
		w.slots = structuralSlots(p.Native, p.Cross, w.nd, w.cd, w.cross)
	}
	fail := func(reason string, cands []string) decision {
		return decision{fail: &Failure{Cross: ci, Parent: w.cross, NativeParent: w.native, Reason: reason, Candidates: cands}}
	}
	cands := w.byName[pn]
	if len(cands) == 0 {
		cands = w.byAlias[pn]
	}
	if len(cands) > 1 {
		cands = tieBreak(p, w.cd, ci, w.nd, cands)
	}
	// Structural evidence, output by output.
	outs := map[string]slot{}
	var drvs []string
	for _, o := range w.cd.InputDerivations[ci] {
		out, ok := cid.Outputs[o]
		if !ok {
			continue
		}
		ts := slotTargets(w.slots[out.Path])
		if len(ts) > 1 {
			var c []string
			for _, t := range ts {
				c = append(c, t.native.String())
			}
			return fail(fmt.Sprintf("its output %s sits where several native outputs sit: %s", o, explainSlots(p.Native, ts)), c)
		}
		if len(ts) == 1 {
			outs[o] = ts[0]
			if !contains(drvs, ts[0].native.Drv) {
				drvs = append(drvs, ts[0].native.Drv)
			}
		}
	}
	sort.Strings(drvs)
	var placed []slot
	for _, o := range sortedKeys(outs) {
		placed = append(placed, outs[o])
	}
	switch {
	case len(cands) == 1:
		n := cands[0]
		outsByName := map[string]slot{}
		for o, s := range outs {
			if s.native.Drv != n {
				return fail(fmt.Sprintf("its name %q gives %s, but its place gives %s", pn, n, explainSlots(p.Native, placed)), append([]string{n}, drvs...))
			}
			if s.native.Output != o {
				outsByName[o] = s
				continue
			}
			// Kept although the name says the same: another parent
			// may place the output elsewhere, which is a conflict.
			outsByName[o] = slot{native: s.native, by: Basis{How: ByName, Parent: w.cross}}
		}
		return decision{native: n, by: Basis{How: ByName, Parent: w.cross}, outs: outsByName}
	case len(drvs) == 1 && len(cands) == 0:
		// Structure alone: a place in an attribute can be shared by
		// different packages, so the versions must agree too.
		nv := ""
		if nd, ok := p.Native.Derivation(drvs[0]); ok {
			nv = drvVersion(nd.Name())
		}
		if cv := drvVersion(cid.Name()); cv == "" || cv != nv {
			return fail(fmt.Sprintf("no input of the native derivation is named %q; its place gives %s, whose version %q is not its version %q (settle it with --pair)", pn, explainSlots(p.Native, placed), nv, cv), drvs)
		}
		return decision{native: drvs[0], by: placed[0].by, outs: outs}
	case len(drvs) == 1 && contains(cands, drvs[0]):
		return decision{native: drvs[0], by: placed[0].by, outs: outs}
	case len(drvs) > 1:
		return fail(fmt.Sprintf("its outputs sit where outputs of different native derivations sit: %s", explainSlots(p.Native, placed)), drvs)
	case len(cands) > 1:
		reason := fmt.Sprintf("several candidates named %q, not told apart by output names, use in the environment, or inputs", pn)
		if len(placed) > 0 {
			reason += fmt.Sprintf("; its place gives none of them: %s", explainSlots(p.Native, placed))
		}
		return fail(reason, cands)
	}
	return fail(fmt.Sprintf("no candidate: no input of the native derivation is named %q, and no native input sits in its place", pn), nil)
}

// applyUser pairs ci as the user said, and reports where that contradicts
// what the graphs say.
func (w *walkStep) applyUser(users *userPairs, ci string, cid *derivation.Derivation, d decision,
	propose func(c, n, parent string, by Basis), proposeOut func(c string, s slot)) {
	p := w.p
	users.used[ci] = true
	up := users.given[ci]
	by := Basis{How: ByUser}
	derivedOut := func(o string) (OutputRef, bool) {
		if d.fail != nil || d.native == "" {
			return OutputRef{}, false
		}
		if s, ok := d.outs[o]; ok {
			return s.native, true
		}
		return OutputRef{Drv: d.native, Output: o}, true
	}
	contradict := func(got OutputRef) {
		p.problems[fmt.Sprintf("--pair %s contradicts the pair by %s with %s (as an input of %s)", up, d.by, got, w.cross)] = true
	}
	if u, ok := users.drv[ci]; ok {
		for _, o := range sortedKeys(cid.Outputs) {
			if got, ok := derivedOut(o); ok && got != (OutputRef{Drv: u.Native, Output: o}) {
				contradict(got)
			}
		}
		propose(ci, u.Native, w.cross, by)
		return
	}
	outs := users.outs[ci]
	var drvs []string
	for _, o := range sortedKeys(outs) {
		if got, ok := derivedOut(o); ok && got != outs[o] {
			contradict(got)
		}
		proposeOut(cid.Outputs[o].Path, slot{native: outs[o], by: by})
		if !contains(drvs, outs[o].Drv) {
			drvs = append(drvs, outs[o].Drv)
		}
	}
	// Outputs of one native derivation make a pair of derivations, whose
	// inputs the walk goes on with.
	if len(drvs) == 1 {
		propose(ci, drvs[0], w.cross, by)
	}
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

// failTainted unpairs the derivations reached only through derivations
// that parents pair with several natives: their inputs were paired from
// whichever of those natives the walk took first, which says nothing.
// A user pair settles a derivation whatever its parents.
func (p *Pairing) failTainted(children map[string][]string) {
	clean := map[string]bool{}
	queue := []string{""}
	for _, c := range sortedKeys(p.pairs) {
		if p.pairedBy[c].How == ByUser {
			clean[c] = true
			queue = append(queue, c)
		}
	}
	for len(queue) > 0 {
		par := queue[0]
		queue = queue[1:]
		if len(p.conflicts[par]) > 0 {
			continue
		}
		for _, c := range children[par] {
			if !clean[c] {
				clean[c] = true
				queue = append(queue, c)
			}
		}
	}
	for _, c := range sortedKeys(p.pairs) {
		if clean[c] || len(p.conflicts[c]) > 0 {
			continue
		}
		p.fail(Failure{Cross: c, Parent: p.via[c], NativeParent: p.pairs[p.via[c]], Candidates: []string{p.pairs[c]},
			Reason: "reached only through derivations that parents pair with several native derivations; settle those with --pair"})
		delete(p.pairs, c)
		if cd, ok := p.Cross.Derivation(c); ok {
			for _, o := range cd.Outputs {
				delete(p.outPairs, o.Path)
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
			n, _ = PairingName(n, suffix)
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
