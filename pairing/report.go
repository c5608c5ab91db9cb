package pairing

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/decross-store/decross-store/classify"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/upstream"
	"github.com/nix-community/go-nix/pkg/storepath"
)

// Class is the platform a path of the cross runtime closure belongs to.
type Class int

const (
	// Neutral paths hold no ELF files: data, scripts, configuration.
	Neutral Class = iota
	// Host paths hold ELF files of the host platform or carry the host
	// suffix.
	Host
	// Build paths hold ELF files of the build platform or are only
	// build-platform inputs.
	Build
)

func (c Class) String() string {
	switch c {
	case Host:
		return "host"
	case Build:
		return "build-platform"
	}
	return "platform-neutral"
}

// MaxClosure bounds the runtime closure walked in the upstream store.
const MaxClosure = 1 << 20

// PathReport is one path of the cross runtime closure.
type PathReport struct {
	Cross   string
	Native  string // what it is served as; "" when not mapped
	Class   Class
	Why     string // what decided Class
	CA      bool   // content-addressed: served unchanged
	Problem string // "" when the path is served correctly
	// PairedBy says why Native was chosen: root, name, role (the
	// attribute), position (the word of an attribute), --pair, or the
	// mapping file.
	PairedBy string
}

// Leak is a reference from a served path to a build-platform path.
type Leak struct {
	From  string // cross path holding the reference
	To    string // build-platform path it references
	Files classify.Files
	// Native lists the native derivations named like To's derivation: the
	// counterpart a native build would reference instead.
	Native []string
	// Mapped is set when To is mapped anyway (by name, bytes differ).
	Mapped bool
}

// Report is what Map and Check found.
type Report struct {
	Paths    []PathReport // sorted by cross path
	Leaks    []Leak       // sorted by From, To
	Problems []string     // sorted
	Notes    []string     // things that limit the analysis but are no problem
	Mapping  *mapping.Mapping
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 && len(r.Leaks) == 0 }

// closure is the runtime closure of some cross paths, scanned.
type closure struct {
	paths []string // sorted
	info  map[string]*pathinfo.PathInfo
	scan  map[string]*classify.Result
}

// closureQueries bounds the path info queries a closure walk runs at once.
const closureQueries = 8

// walkClosure reads the path infos of roots' closure and scans each NAR for
// ELF machines and references. Roots that are not valid are reported in
// missing rather than failing the walk.
func walkClosure(ctx context.Context, store upstream.Reader, roots []string) (*closure, []string, error) {
	c := &closure{info: map[string]*pathinfo.PathInfo{}, scan: map[string]*classify.Result{}}
	var problems []string
	query := func(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
		info, err := store.QueryPathInfo(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("runtime closure: query path info %s: %w", p, err)
		}
		return info, nil
	}
	err := upstream.WalkClosure(ctx, query, roots, closureQueries, func(p string, info *pathinfo.PathInfo) error {
		if info == nil {
			problems = append(problems, fmt.Sprintf("%s: %v (not built, or garbage-collected)", p, errNotValid))
			return nil
		}
		if len(c.info) >= MaxClosure {
			return fmt.Errorf("runtime closure: more than %d paths", MaxClosure)
		}
		c.info[p] = info
		c.paths = append(c.paths, p)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(c.paths)
	for _, p := range c.paths {
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("scan %s: %w", p, err)
		}
		res, err := scanPath(ctx, store, c.info[p])
		if err != nil {
			return nil, nil, err
		}
		c.scan[p] = res
	}
	return c, problems, nil
}

func scanPath(ctx context.Context, store upstream.Reader, info *pathinfo.PathInfo) (*classify.Result, error) {
	var refs []string
	for _, r := range info.References {
		if r != info.Path {
			refs = append(refs, r)
		}
	}
	s, err := classify.NewScanner(refs)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", info.Path, err)
	}
	rc, err := store.NarFromPath(ctx, info.Path)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", info.Path, err)
	}
	defer rc.Close()
	res, err := s.Scan(rc)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", info.Path, err)
	}
	if res.NarSize != info.NarSize {
		return nil, fmt.Errorf("scan %s: NAR is %d bytes, path info says %d", info.Path, res.NarSize, info.NarSize)
	}
	return res, nil
}

// classRank orders the classes by how well a path of that class stands in
// for a native one.
func classRank(c Class) int {
	switch c {
	case Host:
		return 0
	case Neutral:
		return 1
	}
	return 2
}

// classOf decides the class of p from its name, its contents and, when
// the cross graph is known, how the roots reach its derivation.
//
// The host marker decides first: nixpkgs adds the host suffix to host
// derivations only, and a host package may well carry build-platform ELF
// files as data (Go's debug/elf test files, say); Why then names them.
// Without it, build-platform ELF decides before host ELF, since a cross
// compiler holds both and runs on the build platform. ELF of other
// platforms, Mach-O and PE files decide nothing; Why names them when
// nothing else decides, and platformNotes points them out.
func classOf(p string, res *classify.Result, pl platforms, g *Graph, buildOnly func(string) bool) (Class, string) {
	buildELF := buildELFFiles(res, pl)
	var hostFiles []string
	for _, e := range pl.hostELF() {
		if f := res.Machines[e]; f != nil {
			hostFiles = append(hostFiles, fmt.Sprintf("%s ELF in %s", e, fileList(*f)))
		}
	}
	hostELF := strings.Join(hostFiles, ", ")
	if _, ok := NormalizeName(pathName(p), pl.marker); ok && pl.marker != "" {
		why := hostELF
		if why == "" {
			why = "host suffix in its name"
		}
		if len(buildELF) > 0 {
			parts := buildELF
			if hostELF != "" {
				parts = append([]string{hostELF}, buildELF...)
			}
			why = "host suffix in its name; " + strings.Join(parts, ", ")
		}
		return Host, why
	}
	if len(buildELF) > 0 {
		return Build, strings.Join(buildELF, ", ")
	}
	if hostELF != "" {
		return Host, hostELF
	}
	if g != nil && buildOnly != nil {
		if prod, ok := g.Producer(p); ok && buildOnly(prod.Drv) {
			return Build, "only a build-platform input of " + prod.Drv
		}
	}
	if other := otherFiles(res, pl); len(other) > 0 {
		var build []string
		for _, e := range pl.buildELF() {
			build = append(build, e.String())
		}
		return Neutral, fmt.Sprintf("no host (%s) or build-platform (%s) ELF files, but %s", pl.host.ELF, strings.Join(build, ", "), strings.Join(other, ", "))
	}
	return Neutral, "no ELF files"
}

// buildELFFiles describes the build-platform ELF files res found, one
// "<machine> ELF in <files>" per machine.
func buildELFFiles(res *classify.Result, pl platforms) []string {
	var out []string
	for _, e := range pl.buildELF() {
		if f := res.Machines[e]; f != nil {
			out = append(out, fmt.Sprintf("%s ELF in %s", e, fileList(*f)))
		}
	}
	return out
}

func pathName(p string) string {
	sp, err := storepath.FromAbsolutePath(p)
	if err != nil {
		return p
	}
	return sp.Name
}

func fileList(f classify.Files) string {
	s := strings.Join(f.Names, ", ")
	if more := f.Count - len(f.Names); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// Map pairs the roots' graphs and emits an entry for every input-addressed
// path of the runtime closure of the cross roots' outputs. Problems do not
// make it fail: the report lists them and the mapping holds what paired.
func Map(ctx context.Context, store upstream.Reader, roots []Root, opts Options) (*Report, error) {
	var nroots, croots []string
	for _, r := range roots {
		nroots = append(nroots, r.Native)
		croots = append(croots, r.Cross)
	}
	native, err := LoadGraph(ctx, opts.drvSource(store), nroots...)
	if err != nil {
		return nil, fmt.Errorf("native graph: %w", err)
	}
	cross, err := LoadGraph(ctx, opts.drvSource(store), croots...)
	if err != nil {
		return nil, fmt.Errorf("cross graph: %w", err)
	}
	p, err := Pair(native, cross, roots, opts)
	if err != nil {
		return nil, err
	}
	return p.Map(ctx, store, opts)
}

// Map is the second half of the package-level Map, for callers that
// already paired.
func (p *Pairing) Map(ctx context.Context, store upstream.Reader, opts Options) (*Report, error) {
	// The runtime closure starts at the outputs of the cross roots.
	var starts, crossRoots, nativeRoots []string
	for c, parent := range p.via {
		if parent != "" {
			continue
		}
		crossRoots = append(crossRoots, c)
		nativeRoots = append(nativeRoots, p.pairs[c])
		d, _ := p.Cross.Derivation(c)
		for _, o := range sortedKeys(d.Outputs) {
			starts = append(starts, d.Outputs[o].Path)
		}
	}
	sort.Strings(starts)
	pl, plProblems, plNotes, err := p.platforms(opts, nativeRoots, crossRoots)
	if err != nil {
		return nil, err
	}
	cl, missing, err := walkClosure(ctx, store, starts)
	if err != nil {
		return nil, err
	}
	rep := &Report{Problems: append(missing, plProblems...), Notes: plNotes}
	classes := map[string]Class{}
	proposed := map[string]mapping.Entry{} // cross path -> its entry, before conflicts
	basis := map[string]Basis{}            // cross path -> why its entry
	unpaired := map[string]bool{}          // cross paths without a native counterpart
	claims := map[string][]string{}        // native path -> cross paths proposing it
	for _, c := range cl.paths {
		info := cl.info[c]
		class, why := classOf(c, cl.scan[c], pl, p.Cross, p.BuildOnly)
		classes[c] = class
		rep.Notes = append(rep.Notes, platformNotes(c, class, cl.scan[c], pl)...)
		pr := PathReport{Cross: c, Class: class, Why: why, CA: info.CA != ""}
		switch {
		case pr.CA:
			pr.Problem = caProblem(cl, info)
		case class == Build && !opts.AllowBuildPlatform:
			pr.Problem = "build-platform path: its native counterpart differs in bytes; it is paired by name only with the build-platform option"
		default:
			e, by, problem := p.entryFor(c)
			if problem != "" {
				unpaired[c] = true
			}
			if problem == "" && len(e.Native) > len(e.Cross) {
				problem = fmt.Sprintf("its native path %s is longer than it, so references cannot be rewritten in place", e.Native)
			}
			if problem != "" {
				pr.Problem = problem
				break
			}
			proposed[c] = e
			basis[c] = by
			claims[e.Native] = append(claims[e.Native], c)
		}
		rep.Paths = append(rep.Paths, pr)
	}
	// Several cross paths may pair with one native path: a host bash and,
	// with the build-platform option, the x86_64 bash of a shebang. The
	// host one is what a native build would have; a tie is refused rather
	// than settled by hash order.
	winner := map[string]string{} // native path -> cross path served as it
	for n, cs := range claims {
		best, tie := cs[0], false
		for _, c := range cs[1:] {
			switch r, rb := classRank(classes[c]), classRank(classes[best]); {
			case r < rb:
				best, tie = c, false
			case r == rb:
				tie = true
			}
		}
		if !tie {
			winner[n] = best
		}
	}
	var entries []mapping.Entry
	for i := range rep.Paths {
		pr := &rep.Paths[i]
		if e, ok := proposed[pr.Cross]; ok {
			switch w, ok := winner[e.Native]; {
			case !ok:
				pr.Problem = fmt.Sprintf("several cross paths of one class pair with its native path %s (%s)", e.Native, strings.Join(claims[e.Native], ", "))
			case w != pr.Cross:
				pr.Problem = fmt.Sprintf("its native path %s is served from the %s path %s instead", e.Native, classes[w], w)
			default:
				pr.Native = e.Native
				pr.PairedBy = basis[pr.Cross].String()
				entries = append(entries, e)
			}
		}
	}
	// A path without a native counterpart is asked for only through the
	// rewritten references of a served path: when none references it, it
	// is only noted.
	referenced := servedRefs(cl, rep.Paths)
	for _, pr := range rep.Paths {
		switch {
		case pr.Problem == "":
		case unpaired[pr.Cross] && !referenced[pr.Cross]:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s is not served (no served path references it): %s", pr.Cross, pr.Problem))
		default:
			rep.Problems = append(rep.Problems, pr.Cross+": "+pr.Problem)
		}
	}
	rep.Problems = append(rep.Problems, p.Problems()...)
	m, err := mapping.New(entries)
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	if m, err = m.WithSystems(pl.host.System, pl.build.System); err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	rep.Mapping = m
	rep.Leaks = leaks(cl, classes, func(to string) ([]string, bool) {
		_, mapped := m.ByCross(to)
		return p.nativeNamed(to), mapped
	})
	sort.Strings(rep.Problems)
	return rep, nil
}

// entryFor finds the native path for cross output path c, and why.
func (p *Pairing) entryFor(c string) (mapping.Entry, Basis, string) {
	ref, native, by, err := p.OutputOf(c)
	if err != nil {
		return mapping.Entry{}, Basis{}, err.Error()
	}
	if native == c {
		return mapping.Entry{}, Basis{}, "it is the same path on both sides but not content-addressed"
	}
	return mapping.Entry{Native: native, Cross: c, Deriver: ref.Drv, Output: ref.Output, PairedBy: by.String()}, by, ""
}

// servedRefs is the set of paths a served path references (itself
// excluded): served paths are the mapped ones and the content-addressed
// ones served as they are.
func servedRefs(cl *closure, paths []PathReport) map[string]bool {
	refs := map[string]bool{}
	for _, pr := range paths {
		if pr.Native == "" && (!pr.CA || pr.Problem != "") {
			continue
		}
		for _, r := range cl.info[pr.Cross].References {
			if r != pr.Cross {
				refs[r] = true
			}
		}
	}
	return refs
}

// nativeNamed lists native derivations named like the derivation of cross
// path c (or like c itself when no derivation is known).
func (p *Pairing) nativeNamed(c string) []string {
	name := pathName(c)
	if prod, ok := p.Cross.Producer(c); ok {
		d, _ := p.Cross.Derivation(prod.Drv)
		name = d.Name()
	}
	name, _ = PairingName(name, p.HostSuffix)
	return p.Native.ByName(name)
}

// caProblem: a content-addressed path is served unchanged, so everything it
// references must be too.
func caProblem(cl *closure, info *pathinfo.PathInfo) string {
	for _, r := range info.References {
		if ri := cl.info[r]; r != info.Path && (ri == nil || ri.CA == "") {
			return fmt.Sprintf("content-addressed, but references the input-addressed %s and so cannot be served unchanged", r)
		}
	}
	return ""
}

func leaks(cl *closure, classes map[string]Class, native func(to string) ([]string, bool)) []Leak {
	var ls []Leak
	for _, from := range cl.paths {
		if classes[from] == Build {
			continue // a build-platform path referencing its own kind is no news
		}
		res := cl.scan[from]
		for _, to := range sortedKeys(res.Refs) {
			if classes[to] != Build {
				continue
			}
			n, mapped := native(to)
			ls = append(ls, Leak{From: from, To: to, Files: *res.Refs[to], Native: n, Mapped: mapped})
		}
	}
	return ls
}

// Check analyses what m would serve from store: the runtime closure of its
// cross paths, classified, with leaks and every path that cannot be served.
func Check(ctx context.Context, store upstream.Reader, m *mapping.Mapping, opts Options) (*Report, error) {
	rep := &Report{Mapping: m}
	var roots, nativeDrvs []string
	for _, e := range m.Entries() {
		roots = append(roots, e.Cross)
		if e.Deriver != "" {
			nativeDrvs = append(nativeDrvs, e.Deriver)
		}
		if len(e.Native) > len(e.Cross) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: native path %s is longer than it, so references cannot be rewritten in place", e.Cross, e.Native))
		}
	}
	cl, missing, err := walkClosure(ctx, store, roots)
	if err != nil {
		return nil, err
	}
	rep.Problems = append(rep.Problems, missing...)

	suffix := strings.TrimPrefix(opts.HostSuffix, "-")
	if suffix == "" {
		suffix = inferFromEntries(m)
	}
	// Graphs make the analysis better but a mapping may outlive its
	// derivations, so failing to load them is only noted.
	var native, cross *Graph
	if len(nativeDrvs) > 0 {
		if native, err = LoadGraph(ctx, opts.drvSource(store), dedupe(nativeDrvs)...); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("native derivations not used (%v)", err))
			native = nil
		}
	}
	var crossDrvs []string
	for _, r := range roots {
		if info := cl.info[r]; info != nil && info.Deriver != "" {
			crossDrvs = append(crossDrvs, info.Deriver)
		}
	}
	var bo map[string]bool
	if len(crossDrvs) > 0 {
		crossDrvs = dedupe(crossDrvs)
		if cross, err = LoadGraph(ctx, opts.drvSource(store), crossDrvs...); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("cross derivations not used, build-platform inputs are recognised by their ELF files only (%v)", err))
			cross = nil
		} else {
			rs := make([]Root, len(crossDrvs))
			for i, d := range crossDrvs {
				rs[i].Cross = d
			}
			bo = buildOnly(cross, rs)
		}
	}
	if native != nil {
		for _, e := range m.Entries() {
			if e.Deriver == "" || e.Output == "" {
				continue
			}
			d, _ := native.Derivation(e.Deriver)
			if o, ok := d.Outputs[e.Output]; !ok || o.Path != e.Native {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: native path %s is not output %q of its deriver %s", e.Cross, e.Native, e.Output, e.Deriver))
			}
		}
	}

	pl, problems, notes, err := checkPlatforms(m, opts, suffix, native, nativeDrvs, cross, crossDrvs)
	if err != nil {
		return nil, err
	}
	rep.Problems = append(rep.Problems, problems...)
	rep.Notes = append(rep.Notes, notes...)

	classes := map[string]Class{}
	for _, c := range cl.paths {
		info := cl.info[c]
		class, why := classOf(c, cl.scan[c], pl, cross, func(d string) bool { return bo[d] })
		classes[c] = class
		rep.Notes = append(rep.Notes, platformNotes(c, class, cl.scan[c], pl)...)
		pr := PathReport{Cross: c, Class: class, Why: why, CA: info.CA != ""}
		if e, ok := m.ByCross(c); ok {
			pr.Native = e.Native
			pr.PairedBy = "the mapping file"
			if e.PairedBy != "" {
				pr.PairedBy = e.PairedBy + " (as recorded in the mapping file)"
			}
		} else if pr.CA {
			pr.Problem = caProblem(cl, info)
		} else {
			pr.Problem = "input-addressed and not in the mapping, so nothing that references it can be served"
		}
		rep.Paths = append(rep.Paths, pr)
	}
	referenced := servedRefs(cl, rep.Paths)
	for _, pr := range rep.Paths {
		switch {
		case pr.Problem == "":
		case !pr.CA && pr.Native == "" && !referenced[pr.Cross]:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s is not served (no served path references it): %s", pr.Cross, pr.Problem))
		default:
			rep.Problems = append(rep.Problems, pr.Cross+": "+pr.Problem)
		}
	}
	rep.Leaks = leaks(cl, classes, func(to string) ([]string, bool) {
		var names []string
		e, mapped := m.ByCross(to)
		if mapped && e.Deriver != "" {
			names = append(names, e.Deriver)
		}
		if native != nil {
			name := pathName(to)
			if cross != nil {
				if prod, ok := cross.Producer(to); ok {
					d, _ := cross.Derivation(prod.Drv)
					name = d.Name()
				}
			}
			name, _ = NormalizeName(name, suffix)
			for _, n := range native.ByName(name) {
				if !contains(names, n) {
					names = append(names, n)
				}
			}
		}
		return names, mapped
	})
	sort.Strings(rep.Problems)
	return rep, nil
}

// inferFromEntries finds the host suffix from the first entry whose names
// differ by one.
func inferFromEntries(m *mapping.Mapping) string {
	for _, e := range m.Entries() {
		if s, err := InferHostSuffix(pathName(e.Native), pathName(e.Cross)); err == nil && s != "" {
			return s
		}
	}
	return ""
}

func dedupe(ss []string) []string {
	sort.Strings(ss)
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// WriteText writes the report for people: served paths with their class,
// leaks with the files holding them, then problems.
func (r *Report) WriteText(w io.Writer) error { return r.write(w, true) }

// WriteSummary is WriteText without the list of paths.
func (r *Report) WriteSummary(w io.Writer) error { return r.write(w, false) }

func (r *Report) write(w io.Writer, paths bool) error {
	var b strings.Builder
	var served, ca int
	for _, p := range r.Paths {
		switch {
		case p.Native != "":
			served++
		case p.CA && p.Problem == "":
			ca++
		}
	}
	fmt.Fprintf(&b, "runtime closure: %d paths, %d mapped, %d content-addressed\n", len(r.Paths), served, ca)
	for _, p := range r.Paths {
		if !paths {
			break
		}
		switch {
		case p.Native != "":
			fmt.Fprintf(&b, "  serve %s\n     from %s\n", p.Native, p.Cross)
		case p.CA && p.Problem == "":
			fmt.Fprintf(&b, "  as-is %s (content-addressed)\n", p.Cross)
		default:
			fmt.Fprintf(&b, "  NOT   %s\n", p.Cross)
		}
		fmt.Fprintf(&b, "        %s: %s\n", p.Class, p.Why)
		if p.PairedBy != "" {
			fmt.Fprintf(&b, "        paired by %s\n", p.PairedBy)
		}
	}
	fmt.Fprintf(&b, "leaks: %d\n", len(r.Leaks))
	for _, l := range r.Leaks {
		fmt.Fprintf(&b, "  %s references build-platform %s\n    in %s\n", l.From, l.To, fileList(l.Files))
		switch {
		case len(l.Native) > 0 && l.Mapped:
			fmt.Fprintf(&b, "    mapped anyway to a native path of %s (bytes differ)\n", strings.Join(l.Native, ", "))
		case len(l.Native) > 0:
			fmt.Fprintf(&b, "    native derivation of the same name: %s\n", strings.Join(l.Native, ", "))
		default:
			fmt.Fprintf(&b, "    no native derivation of the same name\n")
		}
	}
	fmt.Fprintf(&b, "problems: %d\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
