package daemonproto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/decross-store/decross-store/pathinfo"
)

// Store is what the server answers from. Implementations are safe for
// concurrent use.
type Store interface {
	// QueryPathInfo returns (nil, nil) when path is not valid in this store.
	QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error)
	// QueryPathFromHashPart returns "" when no valid path has that hash part.
	QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error)
	// NarFromPath prepares the NAR of a valid path. Every check that can fail
	// happens before it returns; the server sends STDERR_LAST only after it
	// succeeded, then copies the reader raw. Unknown path → error.
	NarFromPath(ctx context.Context, path string) (io.ReadCloser, error)
	// ValidPaths lists every valid path (QueryAllValidPaths).
	ValidPaths(ctx context.Context) ([]string, error)
}

// ErrInvalidPath is matched (errors.Is) by Store errors that mean "this
// path is not valid here, and here is why". Validity queries (IsValidPath,
// QueryValidPaths, QueryMissing, BuildPaths*) answer such a path as absent
// instead of failing; QueryPathInfo and NarFromPath send the error text,
// which should contain "is not valid" (Nix clients read that as an invalid
// path, not as a broken store).
var ErrInvalidPath = errors.New("path is not valid")

// Server answers worker-protocol connections from a Store. The zero value
// of each limit selects its default.
type Server struct {
	Store  Store
	Logger *slog.Logger // nil discards logs
	// NixVersion is sent to clients at protocol 1.33 and later; Nix shows
	// it in "nix store ping" and nowhere else. Default "decross-store".
	NixVersion string

	// MaxStringLen caps a string the server keeps (default 1 MiB).
	MaxStringLen int
	// MaxListLen caps the entry count of a list or map (default 1<<20).
	MaxListLen int
	// MaxRequestBytes caps the strings kept from one request in total
	// (default 64 MiB), so long lists of long strings cannot pile up.
	MaxRequestBytes int
	// MaxDrainLen caps a string or frame the server discards unread, such
	// as the text of AddTextToStore (default 1 GiB).
	MaxDrainLen int64

	// Draining, when set, returns for a connection's ctx a channel that is
	// closed when the server wants sessions to end (a graceful shutdown).
	// ServeConn then finishes the request in progress and returns nil
	// instead of waiting for the next one; a session idle at that moment
	// ends at once (rw is closed if it is an io.Closer).
	Draining func(ctx context.Context) <-chan struct{}

	// Hooks, when set, is told about every request, for metrics.
	Hooks Hooks
}

// Hooks observes what a Server does. Its methods are called from the
// goroutines serving connections, several at once, and should return
// quickly.
type Hooks interface {
	// Request reports a request once it has been answered or has failed:
	// op is its name in the protocol ("QueryPathInfo", "NarFromPath";
	// "Handshake" for the handshake, "unknown" for an operation code
	// this server does not know), reason is "" when it succeeded.
	Request(op string, reason Reason)
	// NarSent reports n bytes of a NAR sent by NarFromPath, including
	// those of a transfer cut short.
	NarSent(n int64)
}

// Reason says why a request failed.
type Reason string

const (
	// ReasonNotServed: the path is not valid in this store (the Store
	// said so with ErrInvalidPath, or it names no path this store has),
	// or it is a derivation to build.
	ReasonNotServed Reason = "not_served"
	// ReasonRefusedWrite: a write (AddToStore, CollectGarbage, ...).
	ReasonRefusedWrite Reason = "refused_write"
	// ReasonUpstream: any other error of the Store, such as an upstream
	// daemon that failed or timed out.
	ReasonUpstream Reason = "upstream"
	// ReasonProtocol: the client sent something that does not follow
	// the protocol (a malformed frame, an unknown operation); the
	// connection is closed.
	ReasonProtocol Reason = "protocol"
	// ReasonIO: the connection failed during the request, or a NAR broke
	// off while it was sent.
	ReasonIO Reason = "io"
)

const (
	defaultMaxStringLen    = 1 << 20
	defaultMaxListLen      = 1 << 20
	defaultMaxRequestBytes = 64 << 20
	defaultMaxDrainLen     = 1 << 30
	defaultNixVersion      = "decross-store"

	// A store path is /nix/store/ + 32 hash chars + '-' + a name of at most
	// 211 characters; anything much longer is not a path.
	maxStorePathLen = 400
	// Output names, hash algorithms, CA strings and the like.
	maxShortLen = 4096

	ioBufferSize = 64 << 10
)

type limits struct {
	str, list, request, drain uint64
}

func (s *Server) limits() limits {
	l := limits{defaultMaxStringLen, defaultMaxListLen, defaultMaxRequestBytes, defaultMaxDrainLen}
	if s.MaxStringLen > 0 {
		l.str = uint64(s.MaxStringLen)
	}
	if s.MaxListLen > 0 {
		l.list = uint64(s.MaxListLen)
	}
	if s.MaxRequestBytes > 0 {
		l.request = uint64(s.MaxRequestBytes)
	}
	if s.MaxDrainLen > 0 {
		l.drain = uint64(s.MaxDrainLen)
	}
	return l
}

// ServeConn runs the handshake and then answers requests until the client
// closes the connection between two requests (nil), the connection fails,
// or the client sends something that cannot be parsed (after one error
// message to the client). If rw is also an io.Closer it is closed when ctx
// is cancelled, which unblocks a pending read.
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriter) error {
	if s.Store == nil {
		return errors.New("serve conn: no store configured")
	}
	if c, ok := rw.(io.Closer); ok {
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := s
	if s.Hooks != nil {
		// A copy whose Store marks its errors, so that a failed request
		// can be told from one this server turns down itself.
		marked := *s
		marked.Store = markedStore{s.Store}
		srv = &marked
	}
	c := &serverConn{
		srv: srv,
		log: log,
		lim: s.limits(),
		r:   wireReader{r: bufio.NewReaderSize(rw, ioBufferSize)},
		w:   wireWriter{w: bufio.NewWriterSize(rw, ioBufferSize)},
	}
	var draining <-chan struct{}
	if s.Draining != nil {
		draining = s.Draining(ctx)
	}
	// A client that connected but has not started the handshake is as idle
	// as one between requests.
	if !c.awaitRequest(draining) {
		if cl, ok := rw.(io.Closer); ok {
			_ = cl.Close()
		}
		return nil
	}
	if err := c.handshake(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		c.observe("Handshake", err)
		return fmt.Errorf("handshake: %w", err)
	}
	c.observe("Handshake", nil)
	log.Debug("client connected", "protocol", fmt.Sprintf("1.%d", minor(c.ver)))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !c.awaitRequest(draining) {
			log.Debug("session idle while the server drains: closing it")
			if cl, ok := rw.(io.Closer); ok {
				_ = cl.Close() // also ends the abandoned wait for a request
			}
			return nil
		}
		op, err := c.r.first()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read opcode: %w", err)
		}
		c.budget = c.lim.request
		c.failed = ""
		if err := c.dispatch(ctx, op); err != nil {
			c.observe(opName(op), err)
			if IsMalformed(err) {
				// The rest of the request cannot be located, so the stream is
				// lost: tell the client why, then hang up.
				c.sendError(err.Error())
				_ = c.w.flush()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("op %d: %w", op, err)
		}
		err = c.w.flush()
		c.observe(opName(op), err)
		if err != nil {
			return fmt.Errorf("op %d: write reply: %w", op, err)
		}
	}
}

// observe reports a request that ended with err (nil: the reply is out,
// which may be an error sent by opFailed or refuse) to the hooks.
func (c *serverConn) observe(op string, err error) {
	h := c.srv.Hooks
	if h == nil {
		return
	}
	reason := c.failed
	switch {
	case err == nil:
	case IsMalformed(err):
		reason = ReasonProtocol
	default:
		reason = ReasonIO
	}
	h.Request(op, reason)
}

// narSent reports NAR bytes sent to the hooks.
func (c *serverConn) narSent(n int64) {
	if h := c.srv.Hooks; h != nil && n > 0 {
		h.NarSent(n)
	}
}

// awaitRequest waits until the next request starts arriving (or the
// connection ends: the read that follows reports it) and reports false when
// the server drains first. The wait runs in a goroutine so a drain can end
// an idle session; that goroutine is abandoned then, and its read ends when
// the caller returns and the connection is closed. A request already
// (partly) received is always served.
func (c *serverConn) awaitRequest(draining <-chan struct{}) bool {
	if draining == nil || c.r.r.Buffered() > 0 {
		return true
	}
	select {
	case <-draining:
		return false
	default:
	}
	arrived := make(chan struct{})
	go func() {
		_, _ = c.r.r.Peek(1)
		close(arrived)
	}()
	select {
	case <-arrived:
		return true
	case <-draining:
		select {
		case <-arrived:
			return true
		default:
			return false
		}
	}
}

type serverConn struct {
	srv      *Server
	log      *slog.Logger
	lim      limits
	r        wireReader
	w        wireWriter
	ver      uint64 // min(client, server)
	features []string
	budget   uint64 // bytes of strings the current request may still keep
	failed   Reason // why the current request was answered with an error
}

func (c *serverConn) atLeast(m uint64) bool { return minor(c.ver) >= m }

func (c *serverConn) handshake() error {
	magic, err := c.r.first()
	if err != nil {
		return err
	}
	if magic != workerMagic1 {
		return malformed("protocol mismatch: bad client magic %#x", magic)
	}
	// Clients up to Nix 2.22 wait for this before sending their version.
	c.w.u64(workerMagic2)
	c.w.u64(serverVersion)
	if err := c.w.flush(); err != nil {
		return err
	}
	cv, err := c.r.u64()
	if err != nil {
		return err
	}
	if major(cv) != 1 || cv < minPeerVersion {
		return malformed("unsupported client protocol version %d.%d", major(cv), minor(cv))
	}
	c.ver = min(cv, serverVersion)
	if c.atLeast(38) {
		// Offering no features keeps every layout at plain 1.38; the
		// negotiated set is the intersection, so it is empty too.
		if err := c.r.skipStrs("client features", c.lim.list, maxShortLen); err != nil {
			return err
		}
		c.w.strs(nil)
		if err := c.w.flush(); err != nil {
			return err
		}
	}
	if c.atLeast(14) {
		affinity, err := c.r.u64()
		if err != nil {
			return err
		}
		if affinity != 0 {
			if _, err := c.r.u64(); err != nil {
				return err
			}
		}
	}
	if c.atLeast(11) {
		if _, err := c.r.u64(); err != nil { // reserveSpace
			return err
		}
	}
	if c.atLeast(33) {
		v := c.srv.NixVersion
		if v == "" {
			v = defaultNixVersion
		}
		c.w.str(v)
	}
	if c.atLeast(35) {
		c.w.u64(2) // not trusted: privileged settings are ignored
	}
	c.w.u64(stderrLast)
	return c.w.flush()
}

func (c *serverConn) hasFeature(f string) bool { return slices.Contains(c.features, f) }

// sendError reports a failed op. Before 1.26 the error is a bare message
// and an exit status.
func (c *serverConn) sendError(msg string) {
	c.w.u64(stderrError)
	if c.atLeast(26) {
		c.w.str("Error")
		c.w.u64(0) // level: error
		c.w.str("Error")
		c.w.str(msg)
		c.w.u64(0) // no position
		c.w.u64(0) // no traces
		return
	}
	c.w.str(msg)
	c.w.u64(1)
}

func (c *serverConn) last() { c.w.u64(stderrLast) }

// opFailed reports an op-level error after the request was read in full;
// the connection stays in sync.
func (c *serverConn) opFailed(op string, err error) error {
	c.log.Debug("op failed", "op", op, "err", err)
	c.failed = ReasonNotServed
	if !errors.Is(err, ErrInvalidPath) && errors.As(err, new(storeError)) {
		c.failed = ReasonUpstream
	}
	c.sendError(err.Error())
	return nil
}

// refuse answers a write op once its request has been consumed.
func (c *serverConn) refuse(op string) error {
	c.log.Debug("refused write", "op", op)
	c.failed = ReasonRefusedWrite
	c.sendError("decross-store is a read-only store: " + op + " refused")
	return nil
}

// storeError is an error that came from the Store.
type storeError struct{ err error }

func (e storeError) Error() string { return e.err.Error() }
func (e storeError) Unwrap() error { return e.err }

func markStoreError(err error) error {
	if err == nil {
		return nil
	}
	return storeError{err}
}

// markedStore wraps every error of a Store in a storeError.
type markedStore struct{ s Store }

func (m markedStore) QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error) {
	info, err := m.s.QueryPathInfo(ctx, path)
	return info, markStoreError(err)
}

func (m markedStore) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	p, err := m.s.QueryPathFromHashPart(ctx, hashPart)
	return p, markStoreError(err)
}

func (m markedStore) NarFromPath(ctx context.Context, path string) (io.ReadCloser, error) {
	rc, err := m.s.NarFromPath(ctx, path)
	return rc, markStoreError(err)
}

func (m markedStore) ValidPaths(ctx context.Context) ([]string, error) {
	paths, err := m.s.ValidPaths(ctx)
	return paths, markStoreError(err)
}

// opNames names the operation codes as Nix's worker protocol does, for
// Hooks; an operation code not listed is "unknown", so that a client
// cannot make up names.
var opNames = map[uint64]string{
	opIsValidPath:                 "IsValidPath",
	opHasSubstitutes:              "HasSubstitutes",
	opQueryPathHash:               "QueryPathHash",
	opQueryReferences:             "QueryReferences",
	opQueryReferrers:              "QueryReferrers",
	opAddToStore:                  "AddToStore",
	opAddTextToStore:              "AddTextToStore",
	opBuildPaths:                  "BuildPaths",
	opEnsurePath:                  "EnsurePath",
	opAddTempRoot:                 "AddTempRoot",
	opAddIndirectRoot:             "AddIndirectRoot",
	opSyncWithGC:                  "SyncWithGC",
	opFindRoots:                   "FindRoots",
	opQueryDeriver:                "QueryDeriver",
	opSetOptions:                  "SetOptions",
	opCollectGarbage:              "CollectGarbage",
	opQuerySubstitutablePathInfo:  "QuerySubstitutablePathInfo",
	opQueryDerivationOutputs:      "QueryDerivationOutputs",
	opQueryAllValidPaths:          "QueryAllValidPaths",
	opQueryPathInfo:               "QueryPathInfo",
	opQueryDerivationOutputNames:  "QueryDerivationOutputNames",
	opQueryPathFromHashPart:       "QueryPathFromHashPart",
	opQuerySubstitutablePathInfos: "QuerySubstitutablePathInfos",
	opQueryValidPaths:             "QueryValidPaths",
	opQuerySubstitutablePaths:     "QuerySubstitutablePaths",
	opQueryValidDerivers:          "QueryValidDerivers",
	opOptimiseStore:               "OptimiseStore",
	opVerifyStore:                 "VerifyStore",
	opBuildDerivation:             "BuildDerivation",
	opAddSignatures:               "AddSignatures",
	opNarFromPath:                 "NarFromPath",
	opAddToStoreNar:               "AddToStoreNar",
	opQueryMissing:                "QueryMissing",
	opQueryDerivationOutputMap:    "QueryDerivationOutputMap",
	opRegisterDrvOutput:           "RegisterDrvOutput",
	opQueryRealisation:            "QueryRealisation",
	opAddMultipleToStore:          "AddMultipleToStore",
	opAddBuildLog:                 "AddBuildLog",
	opBuildPathsWithResults:       "BuildPathsWithResults",
	opAddPermRoot:                 "AddPermRoot",
}

func opName(op uint64) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return "unknown"
}
