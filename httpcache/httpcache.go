package httpcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

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
	// Compressions bounds the NARs compressed while they are sent, at
	// once (default: the number of CPUs); more requests wait for one.
	Compressions int
}

// Handler answers the requests of Nix binary cache clients.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	info     []byte        // nix-cache-info
	compress chan struct{} // semaphore: on-the-fly compressions
	encoders sync.Pool     // *zstd.Encoder
	buffers  sync.Pool     // *[]byte, copy buffers
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
	if cfg.Compressions <= 0 {
		cfg.Compressions = runtime.GOMAXPROCS(0)
	}
	h := &Handler{
		cfg:      cfg,
		log:      cfg.Logger,
		info:     fmt.Appendf(nil, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: %d\n", cfg.Priority),
		compress: make(chan struct{}, cfg.Compressions),
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
		h.done(op, ReasonIO) // the client left; nobody to answer
		return
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
	if st.Compressed {
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size, 10))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		h.done(op, "")
		return
	}
	if !st.Compressed {
		// Compressing takes a core; wait for one rather than run many.
		select {
		case h.compress <- struct{}{}:
			defer func() { <-h.compress }()
		case <-r.Context().Done():
			h.done(op, ReasonIO)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	start := time.Now()
	if st.Compressed {
		err = h.copy(w, st)
	} else {
		err = h.compressTo(w, st)
	}
	if h.cfg.Hooks != nil {
		h.cfg.Hooks.NarSent(w.n)
	}
	if err != nil {
		h.log.Warn("http: NAR transfer failed", "path", path, "sent", w.n, "error", err, "client", r.RemoteAddr)
		h.done(op, ReasonIO)
		// The status is sent: only a cut connection tells the client that
		// the body is not whole (a chunked body would otherwise end well).
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

// compressTo sends the plain NAR r compressed with zstd. The settings are
// compaction's (fastest level, one goroutine, 1 MiB window): memory stays
// flat however large the NAR, and a client cannot tell the two apart.
func (h *Handler) compressTo(w io.Writer, r io.Reader) error {
	enc, _ := h.encoders.Get().(*zstd.Encoder)
	if enc == nil {
		var err error
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
		if err != nil {
			return fmt.Errorf("zstd encoder: %w", err)
		}
	}
	// Larger writes than the encoder's blocks: fewer deadline updates.
	bw := &bufferedWriter{w: w, buf: (*h.buffers.Get().(*[]byte))[:0]}
	enc.Reset(bw)
	err := h.copy(enc, r)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if ferr := bw.flush(); err == nil {
		err = ferr
	}
	buf := bw.buf[:cap(bw.buf)]
	h.buffers.Put(&buf)
	if err == nil {
		enc.Reset(nil)
		h.encoders.Put(enc)
	}
	return err
}

// bufferedWriter gathers writes up to its buffer's capacity.
type bufferedWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(b.buf) {
			_, b.err = b.w.Write(p)
			if b.err != nil {
				return 0, b.err
			}
			return len(p), nil
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *bufferedWriter) flush() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	_, b.err = b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return b.err
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
