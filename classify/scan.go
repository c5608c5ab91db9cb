package classify

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"
)

// MaxFiles is how many file names a Scan keeps per machine and per
// reference; the counts stay exact. A path with thousands of binaries that
// all name the same library needs a few examples, not the whole list.
const MaxFiles = 16

const hashLen = 32 // nixbase32 hash part of a store path

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
	// Refs lists, per candidate store path found, the files (regular file
	// contents or symlink targets) that name it.
	Refs map[string]*Files
	// NarSize is the number of bytes read. The NAR reader reports some
	// truncations as a clean end, so callers that know the size (a path
	// info's NarSize) compare it.
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
	buf    []byte
}

// NewScanner prepares a scanner for the given candidate store paths
// (absolute, /nix/store/<hash>-<name>).
func NewScanner(candidates []string) (*Scanner, error) {
	s := &Scanner{byHash: make(map[string]string, len(candidates)), buf: make([]byte, 64<<10)}
	for _, c := range candidates {
		sp, err := storepath.FromAbsolutePath(c)
		if err != nil {
			return nil, fmt.Errorf("reference candidate %q: %w", c, err)
		}
		s.byHash[nixbase32.EncodeToString(sp.Digest)] = c
	}
	return s, nil
}

// Scan reads the NAR from r to its end.
func (s *Scanner) Scan(r io.Reader) (*Result, error) {
	cr := &counter{r: r}
	nr, err := nar.NewReader(cr)
	if err != nil {
		return nil, fmt.Errorf("read nar: %w", err)
	}
	defer nr.Close()
	res := &Result{Machines: map[elf.Machine]*Files{}, Refs: map[string]*Files{}}
	hits := map[string]bool{}
	for {
		h, err := nr.Next()
		// The reader signals the end with a bare io.EOF; a wrapped one
		// means the NAR was cut short.
		if err == io.EOF {
			res.NarSize = cr.n
			return res, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read nar: %w", err)
		}
		clear(hits)
		switch h.Type {
		case nar.TypeSymlink:
			s.search([]byte(h.LinkTarget), hits)
		case nar.TypeRegular:
			m, err := s.scanFile(nr, hits)
			if err != nil {
				return nil, fmt.Errorf("read nar file %s: %w", h.Path, err)
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
		for p := range hits {
			f := res.Refs[p]
			if f == nil {
				f = &Files{}
				res.Refs[p] = f
			}
			f.add(h.Path)
		}
	}
}

// scanFile streams one file through the reference search, keeping the last
// hashLen-1 bytes of each chunk so hashes that straddle chunks are found.
// It returns the ELF machine, or EM_NONE when the file is not ELF.
func (s *Scanner) scanFile(r io.Reader, hits map[string]bool) (elf.Machine, error) {
	machine := elf.EM_NONE
	keep := 0
	first := true
	for {
		n, err := io.ReadFull(r, s.buf[keep:])
		n += keep
		if first && n > 0 {
			machine = elfMachine(s.buf[:n])
			first = false
		}
		if n > 0 {
			s.search(s.buf[:n], hits)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return machine, nil
		}
		if err != nil {
			return machine, err
		}
		keep = min(n, hashLen-1)
		copy(s.buf, s.buf[n-keep:n])
	}
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

// search finds candidate hashes in b: at each window it checks characters
// from the end backwards and skips past the first one that cannot be part
// of a hash, as Nix's own scanner does.
func (s *Scanner) search(b []byte, hits map[string]bool) {
	if len(s.byHash) == 0 {
		return
	}
	for i := 0; i+hashLen <= len(b); {
		j := hashLen - 1
		for j >= 0 && nixbase32.Is(b[i+j]) {
			j--
		}
		if j >= 0 {
			i += j + 1
			continue
		}
		if p, ok := s.byHash[string(b[i:i+hashLen])]; ok {
			hits[p] = true
		}
		i++
	}
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
