package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode"

	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/platform"
)

// Entry pairs one native store path with the cross-built path it is served from.
type Entry struct {
	Native  string `json:"native"`
	Cross   string `json:"cross"`
	Deriver string `json:"deriver,omitempty"` // native .drv that would produce Native
	Output  string `json:"output,omitempty"`  // output name of Native in Deriver
	// PairedBy is why `map` paired the two (root, name, role, position,
	// --pair), kept so that `check` can say it again. Serving ignores it.
	PairedBy string `json:"pairedBy,omitempty"`
}

type file struct {
	HostSystem  *string `json:"hostSystem"`
	BuildSystem *string `json:"buildSystem"`
	Paths       []Entry `json:"paths"`
}

// Mapping is a validated set of entries, indexed both ways, and the
// platforms they were made for.
type Mapping struct {
	entries  []Entry
	byNative map[string]int
	byCross  map[string]int

	hostSystem, buildSystem string
}

// New validates entries: every path a store path, every native and every
// cross path at most once, native different from cross, and no hash part
// shared by two paths or by a native and a cross path.
func New(entries []Entry) (*Mapping, error) {
	m := &Mapping{
		entries:  append([]Entry(nil), entries...),
		byNative: make(map[string]int, len(entries)),
		byCross:  make(map[string]int, len(entries)),
	}
	hashParts := make(map[string]string, 2*len(entries))
	for i, e := range m.entries {
		if err := checkStorePath(e.Native); err != nil {
			return nil, fmt.Errorf("mapping entry %d (native %q): %w", i, e.Native, err)
		}
		if err := checkStorePath(e.Cross); err != nil {
			return nil, fmt.Errorf("mapping entry %d (cross %q): %w", i, e.Cross, err)
		}
		if strings.IndexFunc(e.PairedBy, unicode.IsControl) >= 0 {
			// check prints it on a line of its own.
			return nil, fmt.Errorf("mapping entry %d: pairedBy %q has a control character", i, e.PairedBy)
		}
		if e.Deriver != "" {
			if err := checkStorePath(e.Deriver); err != nil {
				return nil, fmt.Errorf("mapping entry %d (deriver %q): %w", i, e.Deriver, err)
			}
			if !strings.HasSuffix(e.Deriver, ".drv") {
				return nil, fmt.Errorf("mapping entry %d: deriver %q is not a .drv path", i, e.Deriver)
			}
		}
		if e.Native == e.Cross {
			return nil, fmt.Errorf("mapping entry %d: native and cross are the same path %s (paths that are equal on both sides need no entry)", i, e.Native)
		}
		if j, dup := m.byNative[e.Native]; dup {
			return nil, fmt.Errorf("mapping entry %d: native path %s is already mapped by entry %d (to %s)", i, e.Native, j, m.entries[j].Cross)
		}
		if j, dup := m.byCross[e.Cross]; dup {
			return nil, fmt.Errorf("mapping entry %d: cross path %s is already used by entry %d (for %s)", i, e.Cross, j, m.entries[j].Native)
		}
		// Caches, hash-part lookups and the leftover scan all key on the
		// hash part: one hash part must name one path in one role. A real
		// store never holds two paths with one hash part.
		for _, side := range []struct{ role, path string }{{"native", e.Native}, {"cross", e.Cross}} {
			h := side.path[len(storepath.StoreDir)+1:][:32]
			if prev, dup := hashParts[h]; dup {
				return nil, fmt.Errorf("mapping entry %d: %s path %s has the hash part of %s", i, side.role, side.path, prev)
			}
			hashParts[h] = fmt.Sprintf("entry %d's %s path %s", i, side.role, side.path)
		}
		m.byNative[e.Native] = i
		m.byCross[e.Cross] = i
	}
	return m, nil
}

func checkStorePath(p string) error {
	sp, err := storepath.FromAbsolutePath(p)
	if err != nil {
		return fmt.Errorf("not a store path: %w", err)
	}
	// FromAbsolutePath cleans its argument first, so "/nix/store/<h>-x/"
	// and "/nix/store/<h>-x/../<h>-y" would pass; only the plain form may.
	if sp.Absolute() != p {
		return fmt.Errorf("not a store path: only /nix/store/<hash>-<name> itself, without anything after the name")
	}
	return nil
}

// Parse reads a mapping file. Unknown fields are rejected so that a typo
// ("natve") is reported rather than silently ignored.
func Parse(r io.Reader) (*Mapping, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse mapping: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("parse mapping: trailing data after the JSON object")
	}
	if f.Paths == nil {
		return nil, fmt.Errorf(`parse mapping: no "paths" list`)
	}
	m, err := New(f.Paths)
	if err != nil {
		return nil, err
	}
	// An absent field is an older file; an empty one is a mistake.
	for _, s := range []struct {
		field string
		v     *string
	}{{"hostSystem", f.HostSystem}, {"buildSystem", f.BuildSystem}} {
		if s.v == nil {
			continue
		}
		if _, err := platform.Lookup(*s.v); err != nil {
			return nil, fmt.Errorf("parse mapping: %s: %w", s.field, err)
		}
	}
	if f.HostSystem != nil {
		m.hostSystem = *f.HostSystem
	}
	if f.BuildSystem != nil {
		m.buildSystem = *f.BuildSystem
	}
	return m, nil
}

// HostSystem is the Nix system the native paths are for
// ("aarch64-linux"), or "" when the file does not say.
func (m *Mapping) HostSystem() string { return m.hostSystem }

// BuildSystem is the Nix system the cross paths were built on
// ("x86_64-linux"), or "" when the file does not say.
func (m *Mapping) BuildSystem() string { return m.buildSystem }

// WithSystems returns m recording the host and build systems; "" leaves one
// unrecorded. Both must be systems the platform package knows.
func (m *Mapping) WithSystems(host, build string) (*Mapping, error) {
	for _, s := range []struct{ role, v string }{{"host", host}, {"build", build}} {
		if s.v == "" {
			continue
		}
		if _, err := platform.Lookup(s.v); err != nil {
			return nil, fmt.Errorf("mapping %s system: %w", s.role, err)
		}
	}
	c := *m
	c.hostSystem, c.buildSystem = host, build
	return &c, nil
}

// Load reads and validates the mapping file at path.
func Load(path string) (*Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load mapping: %w", err)
	}
	defer f.Close()
	m, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Write writes m in the file format, entries sorted by native path, the
// systems first when they are known.
func (m *Mapping) Write(w io.Writer) error {
	entries := m.Entries()
	var buf bytes.Buffer
	buf.WriteString("{")
	for _, s := range []struct{ field, v string }{{"hostSystem", m.hostSystem}, {"buildSystem", m.buildSystem}} {
		if s.v == "" {
			continue
		}
		b, err := json.Marshal(s.v)
		if err != nil {
			return fmt.Errorf("write mapping: %w", err)
		}
		fmt.Fprintf(&buf, "%q: %s,\n ", s.field, b)
	}
	buf.WriteString("\"paths\": [")
	for i, e := range entries {
		if i > 0 {
			buf.WriteString(",")
		}
		buf.WriteString("\n  ")
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("write mapping: %w", err)
		}
		buf.Write(b)
	}
	if len(entries) > 0 {
		buf.WriteString("\n")
	}
	buf.WriteString("]}\n")
	_, err := w.Write(buf.Bytes())
	return err
}

// Entries returns the entries sorted by native path.
func (m *Mapping) Entries() []Entry {
	out := append([]Entry(nil), m.entries...)
	sort.Slice(out, func(i, j int) bool { return out[i].Native < out[j].Native })
	return out
}

// Len is the number of entries.
func (m *Mapping) Len() int { return len(m.entries) }

// ByNative returns the entry serving native.
func (m *Mapping) ByNative(native string) (Entry, bool) {
	i, ok := m.byNative[native]
	if !ok {
		return Entry{}, false
	}
	return m.entries[i], true
}

// ByCross returns the entry whose cross path is cross.
func (m *Mapping) ByCross(cross string) (Entry, bool) {
	i, ok := m.byCross[cross]
	if !ok {
		return Entry{}, false
	}
	return m.entries[i], true
}
