package classify

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/narstream"
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
	// Machines lists, per ELF machine (elf.EM_AARCH64, elf.EM_X86_64, ...),
	// the files of that machine.
	Machines map[elf.Machine]*Files
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

// Has reports whether at least one file is an ELF object for m.
func (r *Result) Has(m elf.Machine) bool { return r.Machines[m] != nil }

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
	res := &Result{Machines: map[elf.Machine]*Files{}, Refs: map[string]*Files{}}
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
			m, err := s.scanFile(h.Size)
			if err != nil {
				return nil, fmt.Errorf("read nar: %w", err)
			}
			if m != elf.EM_NONE {
				f := res.Machines[m]
				if f == nil {
					f = &Files{}
					res.Machines[m] = f
				}
				f.add(h.Path)
			}
		}
		for p := range s.hits {
			f := res.Refs[p]
			if f == nil {
				f = &Files{}
				res.Refs[p] = f
			}
			f.add(h.Path)
		}
	}
}

// scanFile streams the current file's size bytes through the reference
// scanner. It returns the ELF machine, or EM_NONE when the file is not ELF.
func (s *Scanner) scanFile(size int64) (elf.Machine, error) {
	machine := elf.EM_NONE
	for first := true; size > 0; first = false {
		n, err := io.ReadFull(&s.nr, s.buf[:min(int64(len(s.buf)), size)])
		if err != nil {
			return machine, err
		}
		if first {
			machine = elfMachine(s.buf[:n])
		}
		s.refs.Write(s.buf[:n], s.found)
		size -= int64(n)
	}
	return machine, nil
}

// elfMachine decodes e_machine from an ELF header prefix.
func elfMachine(b []byte) elf.Machine {
	if len(b) < 20 || string(b[:4]) != elf.ELFMAG {
		return elf.EM_NONE
	}
	var order binary.ByteOrder
	switch elf.Data(b[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return elf.EM_NONE
	}
	return elf.Machine(order.Uint16(b[18:20]))
}

// Summary describes r in one line, for reports: "aarch64 ELF (3 files)".
func (r *Result) Summary() string {
	if len(r.Machines) == 0 {
		return "no ELF files"
	}
	ms := make([]elf.Machine, 0, len(r.Machines))
	for m := range r.Machines {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i] < ms[j] })
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s ELF (%d files, e.g. %s)", MachineName(m), r.Machines[m].Count, r.Machines[m].Names[0])
	}
	return strings.Join(parts, ", ")
}

// MachineName is the short name Nix systems use for m ("aarch64",
// "x86_64"), or the debug/elf name for others.
func MachineName(m elf.Machine) string {
	switch m {
	case elf.EM_AARCH64:
		return "aarch64"
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_386:
		return "i686"
	case elf.EM_ARM:
		return "armv7"
	case elf.EM_RISCV:
		return "riscv"
	}
	return m.String()
}
