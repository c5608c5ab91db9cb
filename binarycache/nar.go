package binarycache

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo"

	"github.com/decross-store/decross-store/pathinfo"
)

// maxZstdWindow bounds the memory a zstd frame may ask for. Nix's levels
// use a few MiB; long-distance mode at most 128 MiB.
const maxZstdWindow = 128 << 20

var errStalled = errors.New("no data received within the stall timeout")

// NarFromPath streams the NAR of path, decompressed. The reader checks
// NarSize and NarHash (and FileSize and FileHash of the compressed file,
// when the narinfo has them) as the bytes pass, and its final Read fails,
// with an error wrapping ErrCorrupt, instead of returning io.EOF when one
// does not match. A download that breaks or stalls fails the read; only
// its start is retried. Cancelling ctx ends the download.
func (c *Cache) NarFromPath(ctx context.Context, path string) (io.ReadCloser, error) {
	ni, info, err := c.narInfo(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("nar from path %s: %w", path, err)
	}
	if ni == nil {
		return nil, fmt.Errorf("nar from path %s: the binary cache %s does not have it", path, c.url)
	}
	body, err := c.openNAR(ctx, ni.URL)
	if err != nil {
		return nil, fmt.Errorf("nar from path %s: %w", path, err)
	}
	r, err := newNarReader(body, ni, info, c.b.where(ni.URL))
	if err != nil {
		body.Close()
		return nil, fmt.Errorf("nar from path %s: %w", path, err)
	}
	return r, nil
}

// openNAR starts the download of key, retrying until the first byte of
// the body could be asked for. The body fails once it receives nothing for
// c.stall.
func (c *Cache) openNAR(ctx context.Context, key string) (io.ReadCloser, error) {
	var body io.ReadCloser
	err := c.retry(ctx, key, func(ctx context.Context) error {
		ctx, cancel := context.WithCancelCause(ctx)
		s := &stallReader{d: c.stall, cancel: cancel, ctx: ctx, where: c.b.where(key)}
		s.timer = time.AfterFunc(c.stall, func() { cancel(errStalled) })
		rc, err := c.b.open(ctx, key)
		s.timer.Stop()
		if err != nil {
			cancel(nil)
			return s.why(err)
		}
		s.rc = rc
		body = s
		return nil
	})
	return body, err
}

// stallReader cancels its download's context when one Read waits longer
// than d. The timer runs only inside Read, so a caller that is slow to
// read is not mistaken for a stalled server.
type stallReader struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
	where  string
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(s.d)
	n, err := s.rc.Read(p)
	s.timer.Stop()
	if err != nil && err != io.EOF {
		err = s.why(err)
	}
	return n, err
}

// why names a stall as such: the transport only sees a cancelled context.
func (s *stallReader) why(err error) error {
	if errors.Is(context.Cause(s.ctx), errStalled) {
		return fmt.Errorf("%s: %w (%v): %w", s.where, errStalled, s.d, err)
	}
	return err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.rc.Close()
	s.cancel(nil)
	return err
}

// fileReader counts and hashes the compressed bytes and refuses more than
// limit of them.
type fileReader struct {
	r     io.Reader
	n     uint64
	limit uint64
	h     hash.Hash // nil when the narinfo has no FileHash
	where string
}

func (f *fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.n += uint64(n)
	if f.h != nil {
		f.h.Write(p[:n])
	}
	if f.n > f.limit {
		return n, fmt.Errorf("%w: %s is longer than %d bytes", ErrCorrupt, f.where, f.limit)
	}
	return n, err
}

// narReader decompresses and checks one NAR.
type narReader struct {
	body   io.ReadCloser
	file   *fileReader
	dec    io.Reader
	closeD func()
	ni     *narinfo.NarInfo
	path   string
	where  string

	h   hash.Hash
	n   uint64
	max uint64
	err error // sticky: every Read after a failure fails the same way
}

func newNarReader(body io.ReadCloser, ni *narinfo.NarInfo, info *pathinfo.PathInfo, where string) (*narReader, error) {
	f := &fileReader{r: body, where: where}
	switch {
	case ni.FileSize > 0:
		f.limit = ni.FileSize
	case ni.Compression == "none":
		f.limit = ni.NarSize
	default:
		// No size to hold the compressed file to: allow for the worst
		// case expansion of incompressible data, and then some.
		f.limit = ni.NarSize + ni.NarSize/4 + 1<<20
	}
	if ni.FileHash != nil {
		f.h = sha256.New() // parseNarInfo accepts no other
	}
	r := &narReader{body: body, file: f, ni: ni, path: info.Path, where: where, h: sha256.New(), max: ni.NarSize, closeD: func() {}}
	// Decompressors that are not handed an io.ByteReader read byte by
	// byte or wrap their own buffer; one buffer here serves all. The
	// bytes it holds were counted and hashed by f already.
	buf := bufio.NewReaderSize(f, 64<<10)
	var err error
	switch ni.Compression {
	case "none":
		r.dec = f
	case "xz":
		// Reads f itself: it buffers, and only its walk of the
		// container may decide what the LZMA2 decoder gets.
		r.dec = newXZReader(f, where, maxXZDict)
	case "zstd":
		var d *zstd.Decoder
		d, err = zstd.NewReader(buf, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err == nil {
			r.dec, r.closeD = d, d.Close
		}
	case "bzip2":
		r.dec = bzip2.NewReader(buf)
	case "br":
		r.dec = brotli.NewReader(buf)
	case "gzip":
		var g *gzip.Reader
		g, err = gzip.NewReader(buf)
		if err == nil {
			r.dec, r.closeD = g, func() { g.Close() }
		}
	default:
		err = fmt.Errorf("compression %q is not supported", ni.Compression)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s (%s): %w", where, ni.Compression, err)
	}
	return r, nil
}

func (r *narReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if rest := r.max - r.n + 1; uint64(len(p)) > rest {
		// One byte past NarSize is enough to tell a long NAR.
		p = p[:rest]
	}
	n, err := r.dec.Read(p)
	if n > 0 {
		r.h.Write(p[:n])
		r.n += uint64(n)
		if r.n > r.max {
			r.err = fmt.Errorf("%w: the NAR of %s from %s is longer than its NarSize %d", ErrCorrupt, r.path, r.where, r.max)
			return 0, r.err
		}
	}
	switch {
	case err == io.EOF:
		if err = r.finish(); err == nil {
			err = io.EOF
		}
	case err != nil:
		err = fmt.Errorf("read the NAR of %s from %s (%s): %w", r.path, r.where, r.ni.Compression, err)
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

// finish checks what the decompressed and compressed streams add up to,
// once the former ended.
func (r *narReader) finish() error {
	if r.n != r.max {
		return fmt.Errorf("%w: the NAR of %s from %s is %d bytes, its NarSize is %d", ErrCorrupt, r.path, r.where, r.n, r.max)
	}
	if got := r.h.Sum(nil); !bytes.Equal(got, r.ni.NarHash.Digest()) {
		var h pathinfo.NarHash
		copy(h[:], got)
		return fmt.Errorf("%w: the NAR of %s from %s has hash %s, its NarHash is %s", ErrCorrupt, r.path, r.where, h, r.ni.NarHash)
	}
	// A decompressor may stop at the end of its stream; the file hash
	// covers the whole file.
	if _, err := io.Copy(io.Discard, r.file); err != nil {
		return fmt.Errorf("read the rest of the NAR file of %s, %s: %w", r.path, r.where, err)
	}
	if r.ni.FileSize > 0 && r.file.n != r.ni.FileSize {
		return fmt.Errorf("%w: the NAR file of %s, %s, is %d bytes, its FileSize is %d", ErrCorrupt, r.path, r.where, r.file.n, r.ni.FileSize)
	}
	if r.file.h != nil && !bytes.Equal(r.file.h.Sum(nil), r.ni.FileHash.Digest()) {
		return fmt.Errorf("%w: the NAR file of %s, %s, does not match its FileHash %s", ErrCorrupt, r.path, r.where, r.ni.FileHash)
	}
	return nil
}

func (r *narReader) Close() error {
	r.closeD()
	r.closeD = func() {}
	return r.body.Close()
}
