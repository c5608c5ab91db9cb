package rewrite

import (
	"errors"
	"fmt"
	"io"
	"path"
)

// maxNesting bounds how deep archives inside archives are fixed.
const maxNesting = 8

// sealedReason is why a compressed stream with a rewritten path is refused.
const sealedReason = "its compressed data holds a store path, and the stream's checksum covers it"

// fix fixes a container of format f, or refuses it.
func (z *fixer) fix(f format, fname string) error {
	switch f {
	case formatZip:
		return z.fixZip()
	case formatTar:
		return z.fixTar()
	case formatSealed:
		return &FormatError{Format: fname, Reason: sealedReason}
	}
	return nil
}

// nested fixes the member at [off, off+n) of this container, whose bytes
// changed, when it is itself a container: a jar stored in a fat jar, a jar
// in a tar, a gzip stream stored in a zip.
func (z *fixer) nested(off, n int64, name string) error {
	head := make([]byte, min(n, sniffLen))
	if _, err := z.orig.ReadAt(head, off); err != nil {
		return fmt.Errorf("read member: %w", err)
	}
	f, fname := formatOf(path.Base(name), head)
	if f != formatZip && f != formatTar && f != formatSealed {
		return nil
	}
	if z.depth+1 >= maxNesting {
		return &FormatError{Format: fname, Reason: fmt.Sprintf("archives nested more than %d deep", maxNesting)}
	}
	sub := &fixer{
		orig:  io.NewSectionReader(z.orig, off, n),
		out:   io.NewSectionReader(z.out, off, n),
		patch: shiftWriter{z.patch, off},
		size:  n,
		depth: z.depth + 1,
		a:     z.a,
		b:     z.b,
	}
	return sub.fix(f, fname)
}

// nestedRefusal says which member of an outer container a refusal is in.
func nestedRefusal(outer, member string, err error) error {
	var fe *FormatError
	if !errors.As(err, &fe) {
		return err
	}
	return &FormatError{Format: outer, Reason: fmt.Sprintf("member %q, a %s file: %s", member, fe.Format, fe.Reason)}
}

// shiftWriter writes at off bytes further into w.
type shiftWriter struct {
	w   io.WriterAt
	off int64
}

func (s shiftWriter) WriteAt(p []byte, off int64) (int, error) { return s.w.WriteAt(p, s.off+off) }
