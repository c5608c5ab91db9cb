package httpcache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/store"
)

// Store is what a Handler serves: *store.Store. Errors matching
// store.ErrNotServed say why a path is not served, and are answered 404
// with their text.
type Store interface {
	QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error)
	QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error)
	NarFile(ctx context.Context, path string) (*narcache.Stored, error)
}

// Hooks observe the requests a Handler answers, for metrics. They are
// called synchronously, so they must be quick and safe for concurrent use.
type Hooks interface {
	// Request reports a request once answered: op is "nix-cache-info",
	// "narinfo", "nar", or "other" for a URL of none of these forms;
	// reason is "" when it succeeded, else one of the Reason constants.
	Request(op, reason string)
	// NarSent reports n bytes of a NAR sent, including those of a
	// transfer cut short.
	NarSent(n int64)
}

// Why a request failed, as Hooks.Request reports it.
const (
	ReasonNotServed  = "not_served"  // 404 for a path: unknown, unmapped or unservable
	ReasonBadRequest = "bad_request" // 400, 405, or 404 for a URL of no known form
	ReasonUpstream   = "upstream"    // 500: the store or its upstream failed
	ReasonIO         = "io"          // the response could not be sent whole
)

// Config configures a Handler.
type Config struct {
	Store    Store
	Priority int          // nix-cache-info's Priority (Nix: lower is preferred)
	Logger   *slog.Logger // nil discards
	Hooks    Hooks        // nil: none

	// StallTimeout fails a response when the client takes none of it for
	// this long (default 1 minute): a client that stops reading does not
	// hold its connection and the NAR's cache entry forever.
	StallTimeout time.Duration
}

// Handler answers the requests of Nix binary cache clients.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	info    []byte    // nix-cache-info
	buffers sync.Pool // *[]byte, copy buffers
}

// copyBuffer is how much a NAR is sent in one write: large enough that a
// write deadline per write costs nothing next to the data.
const copyBuffer = 256 << 10

// New returns a Handler serving cfg.Store.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("httpcache: a store is required")
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = time.Minute
	}
	h := &Handler{
		cfg:  cfg,
		log:  cfg.Logger,
		info: fmt.Appendf(nil, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: %d\n", cfg.Priority),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.buffers.New = func() any { b := make([]byte, copyBuffer); return &b }
	return h, nil
}

// ServeHTTP answers one request.
func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &stallWriter{ResponseWriter: rw, rc: http.NewResponseController(rw), stall: h.cfg.StallTimeout}
	req, status, reason := route(r.Method, r.URL.Path)
	op := req.op()
	if status != http.StatusOK {
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD")
		}
		h.log.Debug("http: refused", "method", r.Method, "path", r.URL.Path, "status", status, "reason", reason, "client", r.RemoteAddr)
		h.reply(w, op, status, ReasonBadRequest, reason)
		return
	}
	switch req.kind {
	case kindCacheInfo:
		h.send(w, r, "text/x-nix-cache-info", h.info)
		h.done(op, "")
	case kindNarInfo:
		h.narInfo(w, r, req)
	case kindNar:
		h.nar(w, r, req)
	}
}

func (req request) op() string {
	switch req.kind {
	case kindCacheInfo:
		return "nix-cache-info"
	case kindNarInfo:
		return "narinfo"
	case kindNar:
		return "nar"
	}
	return "other"
}

func (h *Handler) done(op, reason string) {
	if h.cfg.Hooks != nil {
		h.cfg.Hooks.Request(op, reason)
	}
}

// reply answers with an error status and its reason as the body.
func (h *Handler) reply(w http.ResponseWriter, op string, status int, reason, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
	h.done(op, reason)
}

// send answers 200 with body (only its length for HEAD).
func (h *Handler) send(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// fail answers a request for a path whose lookup failed: 404 with the
// reason when the store does not serve it, 500 when the store or its
// upstream failed.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, op, path string, err error) {
	if r.Context().Err() != nil {
		h.done(op, ReasonIO)
		// The client left (or half-closed): returning would send an empty
		// 200, which a client still reading would take for an answer.
		panic(http.ErrAbortHandler)
	}
	if errors.Is(err, store.ErrNotServed) {
		h.log.Info("http: not served", "path", path, "url", r.URL.Path, "reason", err, "client", r.RemoteAddr)
		h.reply(w, op, http.StatusNotFound, ReasonNotServed, err.Error())
		return
	}
	h.log.Error("http: request failed", "path", path, "url", r.URL.Path, "error", err, "client", r.RemoteAddr)
	h.reply(w, op, http.StatusInternalServerError, ReasonUpstream, err.Error())
}

// find returns the served path with hashPart, or answers 404 (false).
func (h *Handler) find(w http.ResponseWriter, r *http.Request, op, hashPart string) (string, bool) {
	path, err := h.cfg.Store.QueryPathFromHashPart(r.Context(), hashPart)
	if err != nil {
		h.fail(w, r, op, "", err)
		return "", false
	}
	if path == "" {
		h.log.Debug("http: unknown hash part", "url", r.URL.Path, "client", r.RemoteAddr)
		h.reply(w, op, http.StatusNotFound, ReasonNotServed, "no path with hash part "+hashPart+" is served here")
		return "", false
	}
	return path, true
}

func (h *Handler) narInfo(w http.ResponseWriter, r *http.Request, req request) {
	const op = "narinfo"
	path, ok := h.find(w, r, op, req.hashPart)
	if !ok {
		return
	}
	info, err := h.cfg.Store.QueryPathInfo(r.Context(), path)
	if err == nil && info == nil {
		err = fmt.Errorf("path '%s' is not valid in this store: %w", path, store.ErrNotServed)
	}
	if err != nil {
		h.fail(w, r, op, path, err)
		return
	}
	h.send(w, r, "text/x-nix-narinfo", narInfo(info, req.hashPart))
	h.done(op, "")
}

// narInfo formats info as Nix writes a narinfo.
func narInfo(info *pathinfo.PathInfo, hashPart string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "StorePath: %s\nURL: %s\nCompression: zstd\nNarHash: %s\nNarSize: %d\n", info.Path, narURL(hashPart, info.NarHash), info.NarHash, info.NarSize)
	refs := make([]string, len(info.References))
	for i, ref := range info.References {
		refs[i] = baseName(ref)
	}
	fmt.Fprintf(&b, "References: %s\n", strings.Join(refs, " "))
	if info.Deriver != "" {
		fmt.Fprintf(&b, "Deriver: %s\n", baseName(info.Deriver))
	}
	for _, sig := range info.Sigs {
		fmt.Fprintf(&b, "Sig: %s\n", sig)
	}
	if info.CA != "" {
		fmt.Fprintf(&b, "CA: %s\n", info.CA)
	}
	return []byte(b.String())
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func (h *Handler) nar(w *stallWriter, r *http.Request, req request) {
	const op = "nar"
	path, ok := h.find(w, r, op, req.hashPart)
	if !ok {
		return
	}
	st, err := h.cfg.Store.NarFile(r.Context(), path)
	if err != nil {
		h.fail(w, r, op, path, err)
		return
	}
	defer st.Close()
	if st.NarHash != req.narHash {
		h.log.Info("http: NAR changed", "path", path, "url", r.URL.Path, "narHash", st.NarHash, "client", r.RemoteAddr)
		h.reply(w, op, http.StatusNotFound, ReasonNotServed,
			fmt.Sprintf("the NAR of %s has changed since this URL was given out: its NAR hash is now %s; fetch its narinfo again", path, st.NarHash))
		return
	}
	w.Header().Set("Content-Type", "application/x-nix-nar")
	length := st.Size
	if !st.Compressed {
		length = rawFrameSize(st.NarSize)
	}
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		h.done(op, "")
		return
	}
	start := time.Now()
	if st.Compressed {
		err = h.copy(w, st)
	} else {
		err = h.sendRaw(w, st, st.NarSize)
	}
	if h.cfg.Hooks != nil {
		h.cfg.Hooks.NarSent(w.n)
	}
	if err != nil {
		h.log.Warn("http: NAR transfer failed", "path", path, "sent", w.n, "error", err, "client", r.RemoteAddr)
		h.done(op, ReasonIO)
		// The status is sent: a cut connection tells the client that the
		// body is not whole.
		panic(http.ErrAbortHandler)
	}
	h.log.Debug("http: sent NAR", "path", path, "bytes", w.n, "stored", st.Compressed, "duration", time.Since(start).Round(time.Millisecond), "client", r.RemoteAddr)
	h.done(op, "")
}

func (h *Handler) copy(w io.Writer, r io.Reader) error {
	buf := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(buf)
	_, err := io.CopyBuffer(w, r, *buf)
	return err
}

// zstd frame of raw blocks (RFC 8878): the magic number; a frame header
// descriptor with an 8-byte content size, no checksum, no dictionary, not
// single-segment (the window then stays small for the decoder, whatever
// the NAR's size); a window descriptor of 1 MiB; the content size. Then
// blocks of at most 128 KiB, each with a 3-byte little-endian header:
// the last-block bit, block type 0 (raw), and the size.
const (
	rawBlockMax  = 128 << 10
	rawFrameHead = "\x28\xb5\x2f\xfd\xc0\x50"
)

// rawFrameSize is the length of the zstd frame of raw blocks holding n
// bytes.
func rawFrameSize(n uint64) int64 {
	blocks := max((n+rawBlockMax-1)/rawBlockMax, 1)
	return int64(len(rawFrameHead)) + 8 + int64(blocks)*3 + int64(n)
}

// sendRaw sends the plain NAR r, of n bytes, as a zstd frame of raw
// blocks. A NAR the cache has not compacted yet (just written, or rebuilt
// after an eviction) is sent this way: it costs no CPU per request, and
// the client reads it as any zstd stream. Once the entry is compacted the
// compressed file goes out instead.
func (h *Handler) sendRaw(w io.Writer, r io.Reader, n uint64) error {
	bufp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bufp)
	buf := *bufp
	head := binary.LittleEndian.AppendUint64([]byte(rawFrameHead), n)
	off := copy(buf, head)
	left := n
	for first := true; first || left > 0; first = false {
		size := min(left, rawBlockMax)
		hdr := uint32(size) << 3
		if size == left {
			hdr |= 1 // last block
		}
		if off+3+int(size) > len(buf) {
			if _, err := w.Write(buf[:off]); err != nil {
				return err
			}
			off = 0
		}
		buf[off], buf[off+1], buf[off+2] = byte(hdr), byte(hdr>>8), byte(hdr>>16)
		off += 3
		if _, err := io.ReadFull(r, buf[off:off+int(size)]); err != nil {
			return fmt.Errorf("read cached NAR: %w", err)
		}
		off += int(size)
		left -= size
	}
	if _, err := w.Write(buf[:off]); err != nil {
		return err
	}
	// The reader checks the length at its end: read it, so that a NAR
	// longer than its entry says is an error, not a quiet cut.
	if k, err := r.Read(buf[:1]); k > 0 || err != io.EOF {
		return fmt.Errorf("read cached NAR: %d bytes more than %d (%v)", k, n, err)
	}
	return nil
}

// stallWriter gives every write to the client StallTimeout to complete,
// and counts what was sent. The deadline is set before each write, not
// once per request: a connection kept alive carries the last deadline
// into its next request, and a request may wait long for a rewrite before
// its first byte.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
	n     int64
}

func (w *stallWriter) WriteHeader(status int) {
	w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	w.ResponseWriter.WriteHeader(status)
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
