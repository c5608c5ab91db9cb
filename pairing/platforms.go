package pairing

import (
	"fmt"
	"sort"
	"strings"

	"github.com/decross-store/decross-store/classify"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/platform"
)

// platforms is what classification knows of the two sides of a cross
// build.
type platforms struct {
	host, build platform.Platform
	// marker is the host config that names of host paths carry: the host
	// suffix, or, in a static set, where native and cross names are equal,
	// the config both carry. "" when names tell nothing.
	marker string
}

// buildELF is the ELF code of the build platform that is not also the
// host's: with equal ELF on both sides, only the graph tells them apart.
func (pl platforms) buildELF() []platform.ELF {
	var out []platform.ELF
	for _, e := range pl.build.ELFs() {
		if e != pl.host.ELF {
			out = append(out, e)
		}
	}
	return out
}

// hostELF is the ELF code of the host (an x86_64 host carries i686 code
// too: grub's i386 modules, multilib libraries) that is not the build
// platform's own.
func (pl platforms) hostELF() []platform.ELF {
	out := []platform.ELF{pl.host.ELF}
	for _, e := range pl.host.ELFs() {
		if e != pl.host.ELF && e != pl.build.ELF {
			out = append(out, e)
		}
	}
	return out
}

// otherFiles describes the code res found that is for neither platform:
// ELF of other machines, classes or byte orders, Mach-O and PE files.
func otherFiles(res *classify.Result, pl platforms) []string {
	known := map[platform.ELF]bool{}
	for _, e := range append(pl.host.ELFs(), pl.build.ELFs()...) {
		known[e] = true
	}
	var out []string
	for _, e := range classify.SortedELF(res.Machines) {
		if !known[e] {
			out = append(out, fmt.Sprintf("%s ELF in %s", e, fileList(*res.Machines[e])))
		}
	}
	formats := make([]string, 0, len(res.Foreign))
	for f := range res.Foreign {
		formats = append(formats, f)
	}
	sort.Strings(formats)
	for _, f := range formats {
		out = append(out, fmt.Sprintf("%s in %s", f, fileList(*res.Foreign[f])))
	}
	return out
}

// platformNotes points out what classOf could not weigh. A host path
// holding build-platform ELF files serves them as they are, which is right
// for data (test inputs, say) but not for a build-platform tool installed
// by mistake, where a native build would hold host code. Code for neither
// platform is named whatever the class, so that no class rests on it
// silently.
func platformNotes(p string, class Class, res *classify.Result, pl platforms) []string {
	var notes []string
	if files := buildELFFiles(res, pl); class == Host && len(files) > 0 {
		notes = append(notes, fmt.Sprintf("%s is a host path but holds %s: served as they are, which is right for data but not for a build-platform tool installed by mistake", p, strings.Join(files, ", ")))
	}
	if other := otherFiles(res, pl); len(other) > 0 {
		notes = append(notes, fmt.Sprintf("%s holds %s: code for neither the host (%s) nor the build platform (%s), which does not count for its class (%s)", p, strings.Join(other, ", "), pl.host.System, pl.build.System, class))
	}
	return notes
}

// platforms finds the host platform from the native roots' system and the
// build platform from the cross roots', unless opts names them, and checks
// the host suffix against the host platform.
func (p *Pairing) platforms(opts Options, nativeRoots, crossRoots []string) (pl platforms, problems, notes []string, err error) {
	sort.Strings(nativeRoots)
	sort.Strings(crossRoots)
	if pl.host, err = sideSystem("host", opts.HostSystem, p.Native, nativeRoots); err != nil {
		return pl, nil, nil, fmt.Errorf("map: %w", err)
	}
	if pl.build, err = sideSystem("build", opts.BuildSystem, p.Cross, crossRoots); err != nil {
		return pl, nil, nil, fmt.Errorf("map: %w", err)
	}
	var names []string
	for _, c := range crossRoots {
		d, _ := p.Cross.Derivation(c)
		names = append(names, d.Name())
	}
	pl.marker = hostMarker(p.HostSuffix, pl.host, names)
	problems, notes = pl.agree(p.HostSuffix)
	return pl, problems, notes, nil
}

// agree checks the platforms against the host suffix and each other: a
// suffix of another system means native and cross derivations were
// instantiated for different platforms.
func (pl platforms) agree(suffix string) (problems, notes []string) {
	if suffix != "" {
		switch sp, ok := platform.ByConfig(suffix); {
		case !ok:
			notes = append(notes, fmt.Sprintf("host suffix %s is not a config of a known system; classes rest on ELF files and the graph", suffix))
		case sp.System != pl.host.System:
			problems = append(problems, fmt.Sprintf("host suffix %s is a config of %s, but the host system is %s: native and cross paths are for different platforms", suffix, sp.System, pl.host.System))
		}
	}
	if pl.host.ELF == pl.build.ELF {
		notes = append(notes, fmt.Sprintf("host %s and build platform %s run the same ELF code: build-platform paths are told apart by the derivation graph only", pl.host.System, pl.build.System))
	}
	return problems, notes
}

// sideSystem is the platform override names, or else the one system all
// of drvs are for.
func sideSystem(side, override string, g *Graph, drvs []string) (platform.Platform, error) {
	if override != "" {
		pl, err := platform.Lookup(override)
		if err != nil {
			return platform.Platform{}, fmt.Errorf("%s system: %w", side, err)
		}
		return pl, nil
	}
	system, from := "", ""
	for _, d := range drvs {
		dd, _ := g.Derivation(d)
		switch {
		case from == "":
			system, from = dd.Platform, d
		case dd.Platform != system:
			return platform.Platform{}, fmt.Errorf("%s system: the roots disagree (%s is for %s, %s for %s); pass the %s system explicitly", side, from, system, d, dd.Platform, side)
		}
	}
	pl, err := platform.Lookup(system)
	if err != nil {
		return platform.Platform{}, fmt.Errorf("%s system of root %s: %w; pass the %s system explicitly", side, from, err, side)
	}
	return pl, nil
}

// hostMarker is the host config that host path names carry: the host
// suffix, or else a config of host that names (of cross paths or
// derivations) carry, as in a static set, whose names are equal on both
// sides.
func hostMarker(suffix string, host platform.Platform, names []string) string {
	if suffix != "" {
		return suffix
	}
	for _, n := range names {
		if c, ok := host.ConfigIn(n); ok {
			return c
		}
	}
	return ""
}

// Platforms assumed for a mapping that does not record them and whose
// derivations and names do not tell: the platforms this project started
// with.
const (
	fallbackHost  = "aarch64-linux"
	fallbackBuild = "x86_64-linux"
)

// checkPlatforms finds the platforms m was made for: from opts, else from
// the mapping file, else from the systems of its native and cross
// derivers and its host suffix, else the fallbacks. Notes say which
// guesses were made.
func checkPlatforms(m *mapping.Mapping, opts Options, suffix string, native *Graph, nativeDrvs []string, cross *Graph, crossDrvs []string) (platforms, []string, []string, error) {
	var pl platforms
	var notes []string
	resolve := func(side, override, recorded, fallback string, g *Graph, drvs []string, fromSuffix string) (platform.Platform, error) {
		switch {
		case override != "":
			return sideSystem(side, override, nil, nil)
		case recorded != "":
			return sideSystem(side, recorded, nil, nil)
		}
		if g != nil && len(drvs) > 0 {
			if p, err := sideSystem(side, "", g, dedupe(drvs)); err == nil {
				notes = append(notes, fmt.Sprintf("the mapping does not record its %s system: %s, the system of its %s derivations", side, p.System, map[string]string{"host": "native", "build": "cross"}[side]))
				return p, nil
			}
		}
		if fromSuffix != "" {
			if p, ok := platform.ByConfig(fromSuffix); ok {
				notes = append(notes, fmt.Sprintf("the mapping does not record its %s system: %s, from the host suffix %s", side, p.System, fromSuffix))
				return p, nil
			}
		}
		notes = append(notes, fmt.Sprintf("the mapping does not record its %s system, and neither its derivations nor its names tell: assuming %s", side, fallback))
		return sideSystem(side, fallback, nil, nil)
	}
	var err error
	if pl.host, err = resolve("host", opts.HostSystem, m.HostSystem(), fallbackHost, native, nativeDrvs, suffix); err != nil {
		return pl, nil, nil, fmt.Errorf("check: %w", err)
	}
	if pl.build, err = resolve("build", opts.BuildSystem, m.BuildSystem(), fallbackBuild, cross, crossDrvs, ""); err != nil {
		return pl, nil, nil, fmt.Errorf("check: %w", err)
	}
	var names []string
	for _, e := range m.Entries() {
		names = append(names, pathName(e.Cross))
	}
	pl.marker = hostMarker(suffix, pl.host, names)
	problems, more := pl.agree(suffix)
	return pl, problems, append(notes, more...), nil
}

// staticRoots finds the host config that every root's name carries, equal
// on both sides: a static package set (pkgsStatic), which nixpkgs names
// "hello-static-aarch64-unknown-linux-musl-2.12" wherever it is built. The
// host system is hostSystem, else the native roots'.
func staticRoots(native, cross *Graph, roots []Root, hostSystem string) (string, bool) {
	config := ""
	for _, r := range roots {
		nd, ok := native.Derivation(r.Native)
		if !ok {
			return "", false
		}
		cd, ok := cross.Derivation(r.Cross)
		if !ok || nd.Name() != cd.Name() {
			return "", false
		}
		system := hostSystem
		if system == "" {
			system = nd.Platform
		}
		host, err := platform.Lookup(system)
		if err != nil {
			return "", false
		}
		c, ok := host.ConfigIn(nd.Name())
		if !ok || (config != "" && c != config) {
			return "", false
		}
		config = c
	}
	return config, config != ""
}
