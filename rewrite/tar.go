package rewrite

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// paxMax bounds the pax extended header data read to find a size record.
const paxMax = 64 << 10

func tarRefusal(format string, args ...any) error {
	return &FormatError{Format: "tar", Reason: fmt.Sprintf(format, args...)}
}

// fixTar recomputes the checksum of every tar header whose bytes rewriting
// changed (a store path in a name or link target): only the name, link name
// and prefix fields may differ between input and output, anything else is
// refused. Member data carries no checksum in tar and is left to the padded
// rule, unless it is itself an archive.
func (z *fixer) fixTar() error {
	orig, out, patch, size := z.orig, z.out, z.patch, z.size
	var a, b [tarBlock]byte
	nextSize := int64(-1) // from a pax header, for the next member
	off := int64(0)
	for off+tarBlock <= size {
		if _, err := orig.ReadAt(a[:], off); err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if a == [tarBlock]byte{} {
			return nil // the end of the archive; tar reads no further
		}
		if !isTarHeader(a[:]) {
			// Not an archive tar can read on from: leave it as it is if
			// rewriting changed nothing there.
			if ok, err := z.sameAt(off, size-off); err != nil || !ok {
				return tarRefusal("no tar header at offset %d, and a store path was rewritten after it", off)
			}
			return nil
		}
		if _, err := out.ReadAt(b[:], off); err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name := string(bytes.TrimRight(a[:100], "\x00"))
		if a != b {
			// name [0,100), linkname [157,257), prefix [345,500) may hold
			// store paths; everything else is structure.
			for _, r := range [][2]int{{100, 148}, {156, 157}, {257, 345}, {500, 512}} {
				if !bytes.Equal(a[r[0]:r[1]], b[r[0]:r[1]]) {
					return tarRefusal("header of %q: a store path reaches into a field other than its names", name)
				}
			}
			sum := fmt.Appendf(nil, "%06o\x00 ", tarChecksum(b[:]))
			if _, err := patch.WriteAt(sum, off+148); err != nil {
				return fmt.Errorf("patch tar: %w", err)
			}
		}
		n, ok := parseOctal(a[124:136])
		if !ok {
			return tarRefusal("header of %q: bad size field", name)
		}
		typ := a[156]
		if nextSize >= 0 && typ != 'x' && typ != 'g' {
			n, nextSize = nextSize, -1
		}
		if typ >= '1' && typ <= '6' {
			n = 0 // links, devices, directories and fifos have no data
		}
		if n > size {
			return tarRefusal("header of %q: size %d beyond the file", name, n)
		}
		data := off + tarBlock
		if typ == 'x' {
			s, err := paxSize(orig, data, n, size)
			if err != nil {
				return tarRefusal("pax header of %q: %v", name, err)
			}
			nextSize = s
		}
		if (typ == tar.TypeReg || typ == 0 || typ == tar.TypeCont) && n > 0 && data+n <= size {
			same, err := z.sameAt(data, n)
			if err != nil {
				return fmt.Errorf("read tar: %w", err)
			}
			if !same {
				if err := z.nested(data, n, name); err != nil {
					return nestedRefusal("tar", name, err)
				}
			}
		}
		off = data + (n+tarBlock-1)/tarBlock*tarBlock
	}
	return nil
}

// paxSize returns the size record of the pax extended header data at off,
// -1 if it has none.
func paxSize(r io.ReaderAt, off, n, size int64) (int64, error) {
	if n > paxMax {
		return 0, fmt.Errorf("%d bytes, more than the %d read", n, paxMax)
	}
	if off+n > size {
		return 0, fmt.Errorf("beyond the end of the file")
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		return 0, err
	}
	found := int64(-1)
	// Records are "<len> <key>=<value>\n", len counting the whole record.
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			return 0, fmt.Errorf("malformed record")
		}
		l, err := strconv.Atoi(string(b[:sp]))
		if err != nil || l <= sp+1 || l > len(b) || b[l-1] != '\n' {
			return 0, fmt.Errorf("malformed record")
		}
		kv := b[sp+1 : l-1]
		if v, ok := bytes.CutPrefix(kv, []byte("size=")); ok {
			s, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || s < 0 {
				return 0, fmt.Errorf("bad size record")
			}
			found = s
		}
		b = b[l:]
	}
	return found, nil
}
