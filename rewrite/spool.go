package rewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/decross-store/decross-store/narstream"
)

// zipTail is how much of a file's end can hold a zip end of central
// directory record: the record and the longest comment.
const zipTail = zipEndLen + zipMaxComment

// zipEndBase looks for a zip end of central directory record at the end of
// the file whose last bytes are tail, size bytes in all, and returns where
// the archive it ends starts in the file, or -1 if there is none. For a
// zip64 archive, whose offsets are not in this record, it returns 0.
func zipEndBase(tail []byte, size int64) int64 {
	for i := len(tail); ; {
		i = bytes.LastIndex(tail[:i], []byte("PK\x05\x06"))
		if i < 0 {
			return -1
		}
		if i+zipEndLen > len(tail) || i+zipEndLen+int(binary.LittleEndian.Uint16(tail[i+20:])) != len(tail) {
			continue
		}
		cdSize := int64(binary.LittleEndian.Uint32(tail[i+12:]))
		cdOffset := int64(binary.LittleEndian.Uint32(tail[i+16:]))
		if cdSize == 0xffffffff || cdOffset == 0xffffffff {
			return 0
		}
		base := size - int64(len(tail)-i) - cdSize - cdOffset
		if base < 0 {
			return -1
		}
		return base
	}
}

// fixFormat fixes what rewriting broke in a file of format f whose input
// is orig and whose rewritten bytes are out, or refuses it.
func (r *Rewriter) fixFormat(f format, fname, file string, orig io.ReaderAt, out readerWriterAt, size int64) error {
	if f != formatZip && f != formatTar && f != formatSealed {
		return nil
	}
	err := newFixer(orig, out, out, size).fix(f, fname)
	var fe *FormatError
	if errors.As(err, &fe) {
		fe.File = file
		return fe
	}
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", file, err)
	}
	return nil
}

// rewriteSpooled rewrites an archive too large to buffer: the input and its
// padded rewrite both go to a temporary file, where the archive's checksums
// are fixed before the result is written out. The first n bytes of the file
// are in st.chunk already.
func (r *Rewriter) rewriteSpooled(st *callState, hdr *narstream.Header, f format, fname string, n int) error {
	file := narFile(hdr.Path)
	tmp, err := os.CreateTemp(r.tempDir, ".tmp-rewrite-*")
	if err != nil {
		return fmt.Errorf("spool %s: %w", hdr.Path, err)
	}
	defer tmp.Close()
	// Unlinked at once: nothing is left behind, whatever happens next.
	if err := os.Remove(tmp.Name()); err != nil {
		return fmt.Errorf("spool %s: %w", hdr.Path, err)
	}
	size := hdr.Size
	out := offsetAt{f: tmp, base: size}

	// The input goes to [0, size), its rewrite to [size, 2*size).
	buf := st.chunk
	remaining := size - int64(n)
	var inPos, outPos int64 // bytes of input and of output spooled
	changed := false
	if _, err := tmp.WriteAt(buf[:n], 0); err != nil {
		return fmt.Errorf("spool %s: %w", hdr.Path, err)
	}
	inPos = int64(n)
	for {
		final := remaining == 0
		done, last := r.replacePadded(buf[:n], final)
		changed = changed || last > 0
		if _, err := out.WriteAt(buf[:done], outPos); err != nil {
			return fmt.Errorf("spool %s: %w", hdr.Path, err)
		}
		outPos += int64(done)
		n = copy(buf, buf[done:n])
		if final && n == 0 {
			break
		}
		want := min(int64(len(buf)-n), remaining)
		if want > 0 {
			m, err := io.ReadFull(&st.rd, buf[n:n+int(want)])
			if err != nil {
				return fmt.Errorf("read nar: %s: %w", hdr.Path, unexpected(err))
			}
			if _, err := tmp.WriteAt(buf[n:n+m], inPos); err != nil {
				return fmt.Errorf("spool %s: %w", hdr.Path, err)
			}
			inPos += int64(m)
			n += m
			remaining -= int64(m)
		}
	}
	if changed {
		if err := r.fixFormat(f, fname, file, io.NewSectionReader(tmp, 0, size), out, size); err != nil {
			return err
		}
	}

	if err := st.enc.beginFile(hdr, size); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	st.scan.Reset()
	for pos := int64(0); pos < size; {
		k := int(min(int64(len(buf)), size-pos))
		if _, err := out.ReadAt(buf[:k], pos); err != nil {
			return fmt.Errorf("spool %s: %w", hdr.Path, err)
		}
		if !st.scan.Write(buf[:k], st.found) {
			return &LeftoverError{File: file, HashPart: st.hit}
		}
		if err := st.enc.write(buf[:k]); err != nil {
			return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
		}
		pos += int64(k)
	}
	if err := st.enc.endFile(); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	return nil
}
