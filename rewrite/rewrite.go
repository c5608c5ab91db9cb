package rewrite

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/narstream"
	"github.com/decross-store/decross-store/refscan"
)

const (
	storePrefix = storepath.StoreDir + "/"
	hashLen     = refscan.HashLen

	// DefaultTextMax is the TextMax used when Options.TextMax is zero.
	DefaultTextMax = 64 << 10
	// MaxTextMax caps Options.TextMax: text files are buffered whole.
	MaxTextMax = 16 << 20

	// chunkSize is how much of a large file is scanned per step. Large
	// enough to amortise per-call costs, small enough to stay in L2.
	chunkSize = 256 << 10
	// writeBufSize batches the many small token writes of the NAR encoder.
	writeBufSize = 64 << 10
)

// Replacement maps one cross-built store path to the native path it stands
// in for. Both are absolute store paths without anything after the name.
type Replacement struct {
	From string // cross path, e.g. /nix/store/<hash>-hello-aarch64-unknown-linux-gnu-2.12
	To   string // native path, e.g. /nix/store/<hash>-hello-2.12
}

// Options tune the rewriter; the zero value is the documented default.
type Options struct {
	// TextMax is the largest regular file that is rewritten exactly
	// (shrinking) when it contains no NUL byte. Zero means DefaultTextMax,
	// a negative value pads every file. At most MaxTextMax.
	TextMax int64
	// Forbidden lists extra hash parts that must not remain in the output,
	// each either a bare 32-character hash part or a store path. The hash
	// parts of all Replacement.From are always forbidden.
	Forbidden []string
	// TempDir is where zip and tar archives too large for TextMax are
	// spooled while their checksums are fixed: each takes twice its size
	// there for the time it is rewritten, in a file unlinked as soon as it
	// is created. Empty means os.TempDir().
	TempDir string
}

// LeftoverError reports a forbidden hash part found in the rewritten NAR.
type LeftoverError struct {
	File     string // path inside the NAR, e.g. "/bin/hello"; "" for the root
	HashPart string
}

func (e *LeftoverError) Error() string {
	file := e.File
	if file == "" {
		file = "<root>"
	}
	return fmt.Sprintf("forbidden hash part %s remains in %s after rewriting", e.HashPart, file)
}

// Rewriter rewrites NARs for a fixed replacement set. It is immutable after
// New and safe for concurrent use; each RewriteNAR call has its own state.
type Rewriter struct {
	byHash    map[string]int // From hash part -> index into from/to/padded
	from      []string
	to        []string
	padded    []string // To padded with '/' to len(From)
	maxFrom   int
	forbidden *refscan.Set
	textMax   int64
	tempDir   string
	chunk     int // bytes of a large file scanned per step; tests shrink it

	states sync.Pool // *callState, to keep steady-state rewriting allocation-free
}

// New validates the replacements and builds a Rewriter.
func New(repls []Replacement, opts Options) (*Rewriter, error) {
	r := &Rewriter{
		byHash:  make(map[string]int, len(repls)),
		textMax: opts.TextMax,
		tempDir: opts.TempDir,
		chunk:   chunkSize,
	}
	forbidden := make([]string, 0, len(repls)+len(opts.Forbidden))
	switch {
	case r.textMax == 0:
		r.textMax = DefaultTextMax
	case r.textMax < 0:
		r.textMax = -1
	case r.textMax > MaxTextMax:
		return nil, fmt.Errorf("text max %d exceeds the limit of %d bytes", opts.TextMax, MaxTextMax)
	}

	for _, rp := range repls {
		if err := storepath.Validate(rp.From); err != nil || !strings.HasPrefix(rp.From, storePrefix) || len(rp.From) <= len(storePrefix)+hashLen+1 {
			return nil, fmt.Errorf("replacement %s -> %s: invalid cross store path: %v", rp.From, rp.To, err)
		}
		if err := storepath.Validate(rp.To); err != nil || !strings.HasPrefix(rp.To, storePrefix) || len(rp.To) <= len(storePrefix)+hashLen+1 {
			return nil, fmt.Errorf("replacement %s -> %s: invalid native store path: %v", rp.From, rp.To, err)
		}
		if len(rp.To) > len(rp.From) {
			return nil, fmt.Errorf("replacement %s -> %s: native path is %d bytes longer than the cross path it replaces",
				rp.From, rp.To, len(rp.To)-len(rp.From))
		}
		h := hashPart(rp.From)
		if prev, ok := r.byHash[h]; ok {
			return nil, fmt.Errorf("replacement %s -> %s: hash part %s already used by %s", rp.From, rp.To, h, r.from[prev])
		}
		r.byHash[h] = len(r.from)
		r.from = append(r.from, rp.From)
		r.to = append(r.to, rp.To)
		pad := len(rp.From) - len(rp.To)
		r.padded = append(r.padded, storePrefix+strings.Repeat("/", pad)+rp.To[len(storePrefix):])
		r.maxFrom = max(r.maxFrom, len(rp.From))
		forbidden = append(forbidden, h)
	}
	for _, f := range opts.Forbidden {
		h, err := parseForbidden(f)
		if err != nil {
			return nil, err
		}
		forbidden = append(forbidden, h)
	}
	var err error
	if r.forbidden, err = refscan.NewSet(forbidden...); err != nil {
		return nil, fmt.Errorf("forbidden hash parts: %w", err)
	}
	for i, to := range r.to {
		if r.forbidden.Has(hashPart(to)) {
			return nil, fmt.Errorf("replacement %s -> %s: native hash part %s is forbidden in the output", r.from[i], to, hashPart(to))
		}
	}

	r.states.New = func() any {
		st := &callState{
			// At least sniffLen: the first read decides a file's format.
			chunk: make([]byte, max(r.chunk+r.carry(), sniffLen)),
			bw:    bufio.NewWriterSize(nil, writeBufSize),
			scan:  *refscan.NewScanner(r.forbidden),
		}
		// Made once per state rather than per chunk, so scanning does
		// not allocate.
		st.found = func(h string) bool { st.hit = h; return false }
		return st
	}
	return r, nil
}

func hashPart(p string) string { return p[len(storePrefix) : len(storePrefix)+hashLen] }

func parseForbidden(f string) (string, error) {
	if len(f) == hashLen {
		if err := nixbase32.ValidateString(f); err != nil {
			return "", fmt.Errorf("forbidden hash part %q: %w", f, err)
		}
		return f, nil
	}
	if err := storepath.Validate(f); err != nil || !strings.HasPrefix(f, storePrefix) {
		return "", fmt.Errorf("forbidden entry %q is neither a hash part nor a store path: %v", f, err)
	}
	return hashPart(f), nil
}

// carry is how many trailing bytes of a chunk may start a match that is not
// complete yet and must wait for the next chunk.
func (r *Rewriter) carry() int { return max(r.maxFrom-1, 0) }

// callState is the per-call scratch space, pooled across calls.
type callState struct {
	chunk []byte
	text  []byte
	out   []byte
	orig  []byte // a small archive's input, kept to fix its checksums
	tail  []byte // the last zipTail bytes of a large file
	bw    *bufio.Writer
	rd    narstream.Reader
	enc   narEncoder
	scan  refscan.Scanner
	hit   string // the leftover the scan found
	found func(hash string) bool
}

// RewriteNAR reads one NAR from src and writes its rewritten form to dst.
// It reads exactly the NAR's bytes from src, nothing after it. On error dst
// holds a partial NAR that must be discarded.
func (r *Rewriter) RewriteNAR(dst io.Writer, src io.Reader) error {
	st := r.states.Get().(*callState)
	st.bw.Reset(dst)
	defer func() {
		st.bw.Reset(nil)
		st.rd.Reset(nil)
		r.states.Put(st)
	}()

	st.rd.Reset(src)
	st.enc.reset(st.bw)
	for {
		hdr, err := st.rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read nar: %w", err)
		}
		if err := r.rewriteEntry(st, hdr); err != nil {
			return err
		}
	}

	if err := st.enc.finish(); err != nil {
		return fmt.Errorf("write nar: %w", err)
	}
	return nil
}

func narFile(p string) string {
	if p == "/" {
		return ""
	}
	return p
}

// leftover returns the first forbidden hash part in b.
func (r *Rewriter) leftover(b []byte) (string, bool) {
	i := refscan.Index(r.forbidden, b)
	if i < 0 {
		return "", false
	}
	return string(b[i : i+hashLen]), true
}

func (r *Rewriter) rewriteEntry(st *callState, hdr *narstream.Header) error {
	file := narFile(hdr.Path)
	if file != "" {
		if h, ok := r.leftover([]byte(path.Base(file))); ok {
			return &LeftoverError{File: file, HashPart: h}
		}
	}
	switch hdr.Type {
	case narstream.TypeDirectory:
		if err := st.enc.directory(hdr); err != nil {
			return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
		}
	case narstream.TypeSymlink:
		target := r.replaceExact(nil, []byte(hdr.LinkTarget))
		if h, ok := r.leftover(target); ok {
			return &LeftoverError{File: file, HashPart: h}
		}
		if err := st.enc.symlink(hdr, string(target)); err != nil {
			return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
		}
	case narstream.TypeRegular:
		if hdr.Size <= r.textMax {
			return r.rewriteSmall(st, hdr)
		}
		return r.rewriteLarge(st, hdr)
	default:
		return fmt.Errorf("read nar: %s: unknown node type %q", hdr.Path, hdr.Type)
	}
	return nil
}

// rewriteSmall buffers a file of at most textMax bytes: exact when it is
// text, padded in place when it holds a NUL.
func (r *Rewriter) rewriteSmall(st *callState, hdr *narstream.Header) error {
	file := narFile(hdr.Path)
	if int64(cap(st.text)) < hdr.Size {
		st.text = make([]byte, hdr.Size)
	}
	in := st.text[:hdr.Size]
	if _, err := io.ReadFull(&st.rd, in); err != nil {
		return fmt.Errorf("read nar: %s: %w", hdr.Path, unexpected(err))
	}
	var out []byte
	f, fname := formatOf(path.Base(file), in[:min(len(in), sniffLen)])
	if f == formatPlain && bytes.IndexByte(in, 0) < 0 {
		st.out = r.replaceExact(st.out[:0], in)
		out = st.out
	} else {
		// The input, in case a checksum over it must be fixed: a copy
		// costs less than looking for a zip end in every small binary
		// that has nothing to rewrite.
		st.orig = append(st.orig[:0], in...)
		_, last := r.replacePadded(in, true)
		if last > 0 {
			if f == formatPlain && zipEndBase(st.orig, hdr.Size) >= 0 {
				// An archive after a stub (a self-extractor): fixable
				// here, where the whole file is at hand.
				f, fname = formatZip, "zip"
			}
			if err := r.fixFormat(f, fname, file, memAt(st.orig), memAt(in), hdr.Size); err != nil {
				return err
			}
		}
		out = in
	}
	if h, ok := r.leftover(out); ok {
		return &LeftoverError{File: file, HashPart: h}
	}
	if err := st.enc.beginFile(hdr, int64(len(out))); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	if err := st.enc.write(out); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	if err := st.enc.endFile(); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	return nil
}

// rewriteLarge streams a file through the chunk buffer, padding in place;
// archives whose checksums may need fixing go to rewriteSpooled instead.
func (r *Rewriter) rewriteLarge(st *callState, hdr *narstream.Header) error {
	file := narFile(hdr.Path)
	buf := st.chunk
	// The first read decides the format, before anything is written.
	n := int(min(int64(len(buf)), hdr.Size))
	if _, err := io.ReadFull(&st.rd, buf[:n]); err != nil {
		return fmt.Errorf("read nar: %s: %w", hdr.Path, unexpected(err))
	}
	remaining := hdr.Size - int64(n)
	f, fname := formatOf(path.Base(file), buf[:min(n, sniffLen)])
	if f == formatZip || f == formatTar {
		return r.rewriteSpooled(st, hdr, f, fname, n)
	}

	if err := st.enc.beginFile(hdr, hdr.Size); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	st.scan.Reset()
	if st.tail == nil {
		st.tail = make([]byte, zipTail)
	}
	tailStart := hdr.Size - zipTail // file offset of st.tail[0]
	var pos, lastChange int64       // file offsets of buf[0], of the end of the last replacement
	for {
		final := remaining == 0
		done, last := r.replacePadded(buf[:n], final)
		if last > 0 {
			lastChange = pos + int64(last)
		}
		if !st.scan.Write(buf[:done], st.found) {
			return &LeftoverError{File: file, HashPart: st.hit}
		}
		if err := st.enc.write(buf[:done]); err != nil {
			return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
		}
		if end := pos + int64(done); end > tailStart {
			from := max(pos, tailStart)
			copy(st.tail[from-tailStart:], buf[from-pos:done])
		}
		pos += int64(done)
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
			n += m
			remaining -= int64(m)
		}
	}
	if lastChange > 0 {
		if f == formatSealed {
			return &FormatError{File: file, Format: fname, Reason: sealedReason}
		}
		tail := st.tail[max(-tailStart, 0):]
		if base := zipEndBase(tail, hdr.Size); base >= 0 && lastChange > base {
			return &FormatError{File: file, Format: "zip", Reason: fmt.Sprintf(
				"a store path was rewritten inside the archive that starts at byte %d of the file; only archives at its start (or after a jmod header), or in files of at most the text limit, are fixed", base)}
		}
	}
	if err := st.enc.endFile(); err != nil {
		return fmt.Errorf("write nar: %s: %w", hdr.Path, err)
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// match reports which From b starts with, if any. b starts at a "/nix/store/".
func (r *Rewriter) match(b []byte) (int, bool) {
	if len(b) < len(storePrefix)+hashLen {
		return 0, false
	}
	i, ok := r.byHash[string(b[len(storePrefix):len(storePrefix)+hashLen])]
	if !ok {
		return 0, false
	}
	f := r.from[i]
	if len(b) < len(f) || string(b[:len(f)]) != f {
		return 0, false
	}
	return i, true
}

// replacePadded rewrites, in place and keeping lengths, every From that
// starts in b and is complete. Unless final, a match may still be cut off at
// the end of b, so only starts before len(b)-carry are decided. It returns
// how many leading bytes of b are final, and where the last replacement
// ends (0 if there was none).
func (r *Rewriter) replacePadded(b []byte, final bool) (done, last int) {
	limit := len(b)
	if !final {
		limit = max(len(b)-r.carry(), 0)
	}
	if len(r.from) == 0 {
		return limit, 0
	}
	done = limit
	for i := 0; i < limit; {
		k := bytes.Index(b[i:], []byte(storePrefix))
		if k < 0 {
			break
		}
		p := i + k
		if p >= limit {
			break
		}
		idx, ok := r.match(b[p:])
		if !ok {
			i = p + 1
			continue
		}
		copy(b[p:], r.padded[idx])
		i = p + len(r.padded[idx])
		done = max(done, i)
		last = i
	}
	return done, last
}

// replaceExact appends src to dst with every From replaced by its To.
func (r *Rewriter) replaceExact(dst, src []byte) []byte {
	if len(r.from) == 0 {
		return append(dst, src...)
	}
	for {
		k := bytes.Index(src, []byte(storePrefix))
		if k < 0 {
			return append(dst, src...)
		}
		idx, ok := r.match(src[k:])
		if !ok {
			dst = append(dst, src[:k+1]...)
			src = src[k+1:]
			continue
		}
		dst = append(dst, src[:k]...)
		dst = append(dst, r.to[idx]...)
		src = src[k+len(r.from[idx]):]
	}
}
