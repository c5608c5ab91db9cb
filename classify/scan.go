package classify

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/narstream"
	"github.com/decross-store/decross-store/platform"
	"github.com/decross-store/decross-store/refscan"
)

// MaxFiles is how many file names a Scan keeps per machine and per
// reference; the counts stay exact. A path with thousands of binaries that
// all name the same library needs a few examples, not the whole list.
const MaxFiles = 16

// Files is a bounded list of NAR-internal file names ("/bin/hello"; "/"
// for a NAR whose root is a file) with the exact number of matches.
type Files struct {
	Names []string
	Count int
}

func (f *Files) add(name string) {
	f.Count++
	if len(f.Names) < MaxFiles {
		f.Names = append(f.Names, name)
	}
}

// Result is what Scan found in one NAR.
type Result struct {
	// Machines lists, per ELF machine, class and byte order, the files
	// of that kind.
	Machines map[platform.ELF]*Files
	// Foreign lists, per executable format that is not ELF ("Mach-O
	// arm64", "PE x86-64"), the files of that format: code for no Linux
	// system, which reports name rather than ignore.
	Foreign map[string]*Files
	// Refs lists, per candidate store path found, the entries whose name,
	// file contents or symlink target names it.
	Refs map[string]*Files
	// NarSize is the size of the NAR in bytes. Scan rejects invalid and
	// truncated NARs, so a caller that knows the size (a path info's
	// NarSize) and finds another was sent a different NAR.
	NarSize uint64
}

type counter struct {
	r io.Reader
	n uint64
}

func (c *counter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += uint64(n)
	return n, err
}

// Has reports whether at least one file is an ELF object of kind e.
func (r *Result) Has(e platform.ELF) bool { return r.Machines[e] != nil }

// Scanner scans NARs for ELF machines and for references to a fixed set of
// candidate store paths. It is not safe for concurrent use.
type Scanner struct {
	byHash map[string]string // hash part -> absolute store path
	set    *refscan.Set      // the keys of byHash
	refs   *refscan.Scanner
	nr     narstream.Reader
	buf    []byte
	hits   map[string]bool // candidates named by the current file
	found  func(hash string) bool
}

// NewScanner prepares a scanner for the given candidate store paths
// (absolute, /nix/store/<hash>-<name>).
func NewScanner(candidates []string) (*Scanner, error) {
	s := &Scanner{
		byHash: make(map[string]string, len(candidates)),
		buf:    make([]byte, 64<<10),
		hits:   map[string]bool{},
	}
	hashes := make([]string, 0, len(candidates))
	for _, c := range candidates {
		sp, err := storepath.FromAbsolutePath(c)
		if err != nil {
			return nil, fmt.Errorf("reference candidate %q: %w", c, err)
		}
		h := nixbase32.EncodeToString(sp.Digest)
		s.byHash[h] = c
		hashes = append(hashes, h)
	}
	set, err := refscan.NewSet(hashes...)
	if err != nil {
		return nil, fmt.Errorf("reference candidates: %w", err)
	}
	s.set = set
	s.refs = refscan.NewScanner(set)
	s.found = func(h string) bool {
		s.hits[s.byHash[h]] = true
		return true
	}
	return s, nil
}

// Scan reads one NAR from r, exactly its bytes and nothing after it. An
// invalid or truncated NAR is an error.
func (s *Scanner) Scan(r io.Reader) (*Result, error) {
	cr := &counter{r: r}
	s.nr.Reset(cr)
	defer s.nr.Reset(nil)
	res := &Result{Machines: map[platform.ELF]*Files{}, Foreign: map[string]*Files{}, Refs: map[string]*Files{}}
	for {
		h, err := s.nr.Next()
		if err == io.EOF {
			res.NarSize = cr.n
			return res, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read nar: %w", err)
		}
		clear(s.hits)
		// Nix finds references anywhere in the NAR, entry names included
		// (a directory named after a store path): so must we, or a
		// reference Nix recorded would go unexplained.
		if name := h.Path[strings.LastIndexByte(h.Path, '/')+1:]; name != "" {
			s.refs.Reset()
			s.refs.Write([]byte(name), s.found)
		}
		s.refs.Reset()
		switch h.Type {
		case narstream.TypeSymlink:
			s.refs.Write([]byte(h.LinkTarget), s.found)
		case narstream.TypeRegular:
			id, err := s.scanFile(h.Size)
			if err != nil {
				return nil, fmt.Errorf("read nar: %w", err)
			}
			switch {
			case id.elf:
				addFile(res.Machines, id.ELF, h.Path)
			case id.foreign != "":
				addFile(res.Foreign, id.foreign, h.Path)
			}
		}
		for p := range s.hits {
			addFile(res.Refs, p, h.Path)
		}
	}
}

func addFile[K comparable](m map[K]*Files, k K, name string) {
	f := m[k]
	if f == nil {
		f = &Files{}
		m[k] = f
	}
	f.add(name)
}

// scanFile streams the current file's size bytes through the reference
// scanner, and identifies the file from its first bytes.
func (s *Scanner) scanFile(size int64) (ident, error) {
	var id ident
	for first := true; size > 0; first = false {
		n, err := io.ReadFull(&s.nr, s.buf[:min(int64(len(s.buf)), size)])
		if err != nil {
			return id, err
		}
		if first {
			id = identify(s.buf[:n])
		}
		s.refs.Write(s.buf[:n], s.found)
		size -= int64(n)
	}
	return id, nil
}

// Summary describes r in one line, for reports: "aarch64 ELF (3 files,
// e.g. /bin/hello)".
func (r *Result) Summary() string {
	if len(r.Machines) == 0 && len(r.Foreign) == 0 {
		return "no ELF files"
	}
	var parts []string
	for _, e := range SortedELF(r.Machines) {
		parts = append(parts, fmt.Sprintf("%s ELF (%d files, e.g. %s)", e, r.Machines[e].Count, r.Machines[e].Names[0]))
	}
	formats := make([]string, 0, len(r.Foreign))
	for f := range r.Foreign {
		formats = append(formats, f)
	}
	sort.Strings(formats)
	for _, f := range formats {
		parts = append(parts, fmt.Sprintf("%s (%d files, e.g. %s)", f, r.Foreign[f].Count, r.Foreign[f].Names[0]))
	}
	return strings.Join(parts, ", ")
}

// SortedELF returns the keys of m in a fixed order: by machine, class,
// byte order.
func SortedELF(m map[platform.ELF]*Files) []platform.ELF {
	out := make([]platform.ELF, 0, len(m))
	for e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Machine != b.Machine {
			return a.Machine < b.Machine
		}
		if a.Class != b.Class {
			return a.Class < b.Class
		}
		return a.Data < b.Data
	})
	return out
}
