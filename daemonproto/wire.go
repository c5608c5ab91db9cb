package daemonproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// malformedError is input that breaks the protocol's framing or a request
// that cannot be parsed; the stream cannot be resynchronised after it.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &malformedError{msg: fmt.Sprintf(format, args...)}
}

// IsMalformed reports whether err means the peer sent bytes that do not
// follow the protocol (as opposed to an I/O failure or a refused request).
func IsMalformed(err error) bool {
	var m *malformedError
	return errors.As(err, &m)
}

func padLen(n uint64) uint64 { return (8 - n%8) % 8 }

// wireReader decodes protocol primitives. Every variable-length item is
// checked against a cap before anything is allocated for it.
type wireReader struct {
	r       *bufio.Reader
	scratch [64]byte
}

// u64 reads one integer in the middle of a message, where EOF means the
// peer hung up half-way.
func (r *wireReader) u64() (uint64, error) {
	if _, err := io.ReadFull(r.r, r.scratch[:8]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return binary.LittleEndian.Uint64(r.scratch[:8]), nil
}

// first reads the integer that starts a message; a clean io.EOF here means
// the peer closed the connection between messages.
func (r *wireReader) first() (uint64, error) {
	if _, err := io.ReadFull(r.r, r.scratch[:8]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(r.scratch[:8]), nil
}

// boolean accepts any non-zero value as true, as Nix does.
func (r *wireReader) boolean() (bool, error) {
	v, err := r.u64()
	return v != 0, err
}

// length reads a string or frame length and rejects it above max.
func (r *wireReader) length(what string, max uint64) (uint64, error) {
	n, err := r.u64()
	if err != nil {
		return 0, err
	}
	if n > max {
		return 0, malformed("%s of %d bytes exceeds the limit of %d bytes", what, n, max)
	}
	return n, nil
}

func (r *wireReader) padding(n uint64) error {
	p := padLen(n)
	if p == 0 {
		return nil
	}
	b := r.scratch[:p]
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	for _, c := range b {
		if c != 0 {
			return malformed("non-zero string padding")
		}
	}
	return nil
}

// str reads a padded string of at most max bytes.
func (r *wireReader) str(what string, max uint64) (string, error) {
	n, err := r.length(what, max)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if err := r.padding(n); err != nil {
		return "", err
	}
	return string(b), nil
}

// skip discards n bytes without allocating for them.
func (r *wireReader) skip(n uint64) error {
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		d, err := r.r.Discard(int(chunk))
		n -= uint64(d)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// skipStr consumes a padded string of at most max bytes without keeping it.
func (r *wireReader) skipStr(what string, max uint64) error {
	n, err := r.length(what, max)
	if err != nil {
		return err
	}
	if err := r.skip(n); err != nil {
		return err
	}
	return r.padding(n)
}

// count reads a list or map length and rejects it above max.
func (r *wireReader) count(what string, max uint64) (uint64, error) {
	n, err := r.u64()
	if err != nil {
		return 0, err
	}
	if n > max {
		return 0, malformed("%s with %d entries exceeds the limit of %d", what, n, max)
	}
	return n, nil
}

// skipStrs consumes a string list without keeping it.
func (r *wireReader) skipStrs(what string, maxCount, maxLen uint64) error {
	n, err := r.count(what, maxCount)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i++ {
		if err := r.skipStr(what, maxLen); err != nil {
			return err
		}
	}
	return nil
}

// skipFramed consumes a framed stream (length-prefixed chunks, no padding,
// ended by an empty chunk) through the reader's own buffer.
func (r *wireReader) skipFramed(maxFrame uint64) error {
	for {
		n, err := r.length("frame", maxFrame)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := r.skip(n); err != nil {
			return err
		}
	}
}

// framedReader exposes the payload of a framed stream as an io.Reader. It
// returns io.EOF at the terminating empty frame, which it consumes.
type framedReader struct {
	r        *wireReader
	maxFrame uint64
	left     uint64 // bytes left in the current frame
	done     bool
}

func (f *framedReader) Read(p []byte) (int, error) {
	if f.done {
		return 0, io.EOF
	}
	for f.left == 0 {
		n, err := f.r.length("frame", f.maxFrame)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			f.done = true
			return 0, io.EOF
		}
		f.left = n
	}
	if uint64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.r.Read(p)
	f.left -= uint64(n)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// wireWriter encodes protocol primitives into a buffered writer. Write
// errors stick in the bufio.Writer and surface at Flush.
type wireWriter struct {
	w       *bufio.Writer
	scratch [8]byte
}

func (w *wireWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(w.scratch[:], v)
	_, _ = w.w.Write(w.scratch[:])
}

func (w *wireWriter) boolean(b bool) {
	if b {
		w.u64(1)
	} else {
		w.u64(0)
	}
}

var zeroPad [8]byte

func (w *wireWriter) str(s string) {
	w.u64(uint64(len(s)))
	_, _ = w.w.WriteString(s)
	_, _ = w.w.Write(zeroPad[:padLen(uint64(len(s)))])
}

func (w *wireWriter) strs(list []string) {
	w.u64(uint64(len(list)))
	for _, s := range list {
		w.str(s)
	}
}

func (w *wireWriter) flush() error { return w.w.Flush() }

// maxTokenLen bounds the keywords of a NAR.
const maxTokenLen = 16

// token reads a short NAR keyword.
func (r *wireReader) token() (string, error) {
	s, err := r.str("nar token", maxTokenLen)
	if err != nil {
		if IsMalformed(err) {
			return "", malformed("nar: token too long")
		}
		return "", fmt.Errorf("read nar: %w", err)
	}
	return s, nil
}

// expect reads a NAR keyword and checks it.
func (r *wireReader) expect(want string) error {
	got, err := r.token()
	if err != nil {
		return err
	}
	if got != want {
		return malformed("nar: unexpected token %q, want %q", got, want)
	}
	return nil
}
