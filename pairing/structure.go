package pairing

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// How says which evidence made a pair.
type How int

const (
	// ByRoot: the pair was given as a root.
	ByRoot How = iota + 1
	// ByName: the only input of the native parent with the same name once
	// the host suffix, a compiler's target prefix or the bootstrap xgcc
	// is accounted for.
	ByName
	// ByAttribute: the only store path of the same attribute of the two
	// parents.
	ByAttribute
	// ByPosition: the same place of the same attribute of the two
	// parents: the word with the same text around the store path
	// ("user-defined-trusted-dirs=<path>/lib").
	ByPosition
	// ByUser: a --pair given by the user.
	ByUser
)

// Basis records why a pair was made.
type Basis struct {
	How    How
	Attr   string // ByAttribute, ByPosition: the attribute
	Word   int    // ByPosition: the word of the attribute in the cross parent, from 0
	Parent string // the cross .drv whose input was paired; "" for roots and user pairs
}

func (b Basis) String() string {
	var s string
	switch b.How {
	case ByRoot:
		return "root"
	case ByUser:
		return "--pair"
	case ByName:
		s = "name"
	case ByAttribute:
		s = "role: attribute " + b.Attr
	case ByPosition:
		s = fmt.Sprintf("position: attribute %s word %d", b.Attr, b.Word)
	default:
		return "unknown"
	}
	if b.Parent != "" {
		s += ", as an input of " + b.Parent
	}
	return s
}

// slot is a native output found at the place of a cross output path in the
// parents' attributes.
type slot struct {
	native OutputRef
	by     Basis
}

// storePathRE finds store paths in attribute words; the name ends where
// Nix names end, so "<path>/lib" gives "<path>".
var storePathRE = regexp.MustCompile(`/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+`)

const storeDirSlash = "/nix/store/"

// occurrence is one word of an attribute that holds store paths.
type occurrence struct {
	word  int
	paths []string
}

// attrTemplates indexes the words of d's attributes that hold store
// paths: attribute -> the word with its paths replaced by "@" -> the
// occurrences of that template, in order.
func attrTemplates(d *derivation.Derivation) map[string]map[string][]occurrence {
	res := map[string]map[string][]occurrence{}
	add := func(attr string, words []string) {
		for i, w := range words {
			if !strings.Contains(w, storeDirSlash) {
				continue // most words; the regexp is the cost of a walk
			}
			locs := storePathRE.FindAllStringIndex(w, -1)
			if len(locs) == 0 {
				continue
			}
			var b strings.Builder
			var paths []string
			last := 0
			for _, l := range locs {
				b.WriteString(w[last:l[0]])
				b.WriteByte('@')
				paths = append(paths, w[l[0]:l[1]])
				last = l[1]
			}
			b.WriteString(w[last:])
			if res[attr] == nil {
				res[attr] = map[string][]occurrence{}
			}
			t := b.String()
			res[attr][t] = append(res[attr][t], occurrence{word: i, paths: paths})
		}
	}
	for k, v := range d.Env {
		if _, own := d.Outputs[k]; own || k == "__json" || !strings.Contains(v, storeDirSlash) {
			continue // an output's attribute holds the derivation's own path
		}
		add(k, strings.Fields(v))
	}
	if js, ok := d.Env["__json"]; ok {
		var attrs map[string]any
		if json.Unmarshal([]byte(js), &attrs) == nil {
			for k, v := range attrs {
				var words []string
				jsonWords(v, 0, &words)
				add(k, words)
			}
		}
	}
	var args []string
	for _, a := range d.Arguments {
		args = append(args, strings.Fields(a)...)
	}
	add("args", args)
	return res
}

// jsonWords appends the words of the strings in a structured attribute,
// in document order (object keys sorted); nesting is bounded.
func jsonWords(v any, depth int, words *[]string) {
	if depth > 8 {
		return
	}
	switch v := v.(type) {
	case string:
		*words = append(*words, strings.Fields(v)...)
	case []any:
		for _, e := range v {
			jsonWords(e, depth+1, words)
		}
	case map[string]any:
		for _, k := range sortedKeys(v) {
			jsonWords(v[k], depth+1, words)
		}
	}
}

// structuralSlots pairs the input outputs of cross parent cd with those of
// native parent nd that sit at the same place of the same attribute: the
// single store path of an attribute on both sides (its role), or the one
// word of the attribute with that text around its paths on both sides.
// A bare path in a list with several paths (buildInputs) says nothing: the
// lists need not have the same members.
func structuralSlots(native, cross *Graph, nd, cd *derivation.Derivation, crossParent string) map[string][]slot {
	ct, nt := attrTemplates(cd), attrTemplates(nd)
	res := map[string][]slot{}
	for _, attr := range sortedKeys(ct) {
		ntm, ok := nt[attr]
		if !ok || isDepList(attr) {
			continue
		}
		ctm := ct[attr]
		bare := len(ctm) == 1 && len(ntm) == 1 && len(ctm["@"]) == 1 && len(ntm["@"]) == 1
		for _, tmpl := range sortedKeys(ctm) {
			// A template that repeats (-L@/lib -L@/lib) says nothing
			// about which is which: the order of the words need not be
			// the same on both sides.
			cocc, nocc := ctm[tmpl], ntm[tmpl]
			if len(cocc) != 1 || len(nocc) != 1 || (tmpl == "@" && !bare) {
				continue
			}
			for k := range cocc {
				if len(cocc[k].paths) != len(nocc[k].paths) {
					continue
				}
				for i, cp := range cocc[k].paths {
					cprod, ok := cross.Producer(cp)
					if !ok || !usesOutput(cd, cprod) || fixedOutputIn(cross, cprod.Drv) {
						continue
					}
					nprod, ok := native.Producer(nocc[k].paths[i])
					if !ok || !usesOutput(nd, nprod) || fixedOutputIn(native, nprod.Drv) {
						continue
					}
					by := Basis{How: ByPosition, Attr: attr, Word: cocc[k].word, Parent: crossParent}
					if tmpl == "@" {
						by = Basis{How: ByAttribute, Attr: attr, Parent: crossParent}
					}
					res[cp] = append(res[cp], slot{native: nprod, by: by})
				}
			}
		}
	}
	return res
}

// isDepList reports whether attr is a dependency list: its members need
// not be the same on both sides (a library only one platform needs), so
// neither a single member nor the place of one says which is which.
func isDepList(attr string) bool {
	if contains(buildDepVars, attr) || contains(hostDepVars, attr) || strings.HasPrefix(attr, "propagated") {
		return true
	}
	return attr == "defaultNativeBuildInputs" || attr == "defaultBuildInputs"
}

// fixedOutputIn reports whether drv of g is a fixed-output derivation: its
// path is the same on both sides, so it never stands for another one.
func fixedOutputIn(g *Graph, drv string) bool {
	d, ok := g.Derivation(drv)
	return ok && isFixedOutput(d)
}

// drvVersion returns the version part of a derivation name as Nix splits
// it: from the first dash followed by a character that is not a letter.
func drvVersion(name string) string {
	for i := 0; i+1 < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		c := name[i+1]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return name[i+1:]
		}
	}
	return ""
}

// usesOutput reports whether d takes output r as an input.
func usesOutput(d *derivation.Derivation, r OutputRef) bool {
	return contains(d.InputDerivations[r.Drv], r.Output)
}

// slotTargets returns the distinct native outputs of slots, sorted, each
// with the first basis that found it.
func slotTargets(slots []slot) []slot {
	seen := map[OutputRef]bool{}
	var out []slot
	for _, s := range slots {
		if !seen[s.native] {
			seen[s.native] = true
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].native.Drv != out[j].native.Drv {
			return out[i].native.Drv < out[j].native.Drv
		}
		return out[i].native.Output < out[j].native.Output
	})
	return out
}

func (r OutputRef) String() string { return r.Drv + "^" + r.Output }

// UserPair is a pair the user settles: two .drv paths, or two output
// paths.
type UserPair struct {
	Cross  string `json:"cross"`
	Native string `json:"native"`
}

func (u UserPair) String() string { return u.Cross + "=" + u.Native }

// userPairs are the validated user pairs, by cross .drv.
type userPairs struct {
	drv  map[string]UserPair // cross .drv -> pair of derivations
	outs map[string]map[string]OutputRef
	// outs: cross .drv -> cross output -> native output
	given map[string]UserPair // cross .drv -> the pair as given (first)
	used  map[string]bool     // cross .drv reached by the walk
}

// checkUserPairs validates the user pairs against the graphs: both sides
// exist, a pair of derivations has a native namesake for every cross
// output, a pair of outputs names outputs.
func checkUserPairs(native, cross *Graph, ups []UserPair) (*userPairs, error) {
	u := &userPairs{drv: map[string]UserPair{}, outs: map[string]map[string]OutputRef{}, given: map[string]UserPair{}, used: map[string]bool{}}
	for _, up := range ups {
		cDrv, nDrv := strings.HasSuffix(up.Cross, ".drv"), strings.HasSuffix(up.Native, ".drv")
		switch {
		case cDrv && nDrv:
			cd, ok := cross.Derivation(up.Cross)
			if !ok {
				return nil, fmt.Errorf("--pair %s: %s is not in the cross graph", up, up.Cross)
			}
			nd, ok := native.Derivation(up.Native)
			if !ok {
				return nil, fmt.Errorf("--pair %s: %s is not in the native graph", up, up.Native)
			}
			var missing []string
			for _, o := range sortedKeys(cd.Outputs) {
				if _, ok := nd.Outputs[o]; !ok {
					missing = append(missing, o)
				}
			}
			if len(missing) > 0 {
				return nil, fmt.Errorf("--pair %s: the native derivation has no output %s; pair such outputs by their paths", up, strings.Join(missing, ", "))
			}
			if prev, dup := u.given[up.Cross]; dup {
				return nil, fmt.Errorf("--pair %s: %s is already paired by --pair %s", up, up.Cross, prev)
			}
			u.drv[up.Cross] = up
			u.given[up.Cross] = up
		case !cDrv && !nDrv:
			cr, ok := cross.Producer(up.Cross)
			if !ok {
				return nil, fmt.Errorf("--pair %s: no derivation of the cross graph has the output %s", up, up.Cross)
			}
			nr, ok := native.Producer(up.Native)
			if !ok {
				return nil, fmt.Errorf("--pair %s: no derivation of the native graph has the output %s", up, up.Native)
			}
			if prev, dup := u.drv[cr.Drv]; dup {
				return nil, fmt.Errorf("--pair %s: its derivation %s is already paired by --pair %s", up, cr.Drv, prev)
			}
			if _, dup := u.outs[cr.Drv][cr.Output]; dup {
				return nil, fmt.Errorf("--pair %s: %s is paired twice", up, up.Cross)
			}
			if u.outs[cr.Drv] == nil {
				u.outs[cr.Drv] = map[string]OutputRef{}
			}
			u.outs[cr.Drv][cr.Output] = nr
			if _, ok := u.given[cr.Drv]; !ok {
				u.given[cr.Drv] = up
			}
		default:
			return nil, fmt.Errorf("--pair %s: give two .drv paths or two output paths", up)
		}
	}
	return u, nil
}

// decision is what the evidence says about one cross input derivation.
type decision struct {
	native string          // paired native .drv; "" when none
	by     Basis           // why native
	outs   map[string]slot // cross output -> native output found by structure
	fail   *Failure        // set when nothing could be decided
}

// explainSlots describes structural evidence for a failure message.
func explainSlots(native *Graph, ss []slot) string {
	var parts []string
	for _, s := range ss {
		p := s.native.String()
		if d, ok := native.Derivation(s.native.Drv); ok {
			if o, ok := d.Outputs[s.native.Output]; ok {
				p = o.Path
			}
		}
		parts = append(parts, p+" ("+s.by.String()+")")
	}
	return strings.Join(parts, ", ")
}
