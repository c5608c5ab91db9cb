package daemonproto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"

	"github.com/decross-store/decross-store/pathinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Caps on what the client accepts from a daemon.
const (
	clientMaxString = 1 << 20
	clientMaxList   = 1 << 20
	// clientMaxListBytes caps one list in a reply, strings and entries
	// together: a million entries of the longest string each would be
	// far more than any path info holds.
	clientMaxListBytes = 64 << 20
	// Log lines and error messages beyond this are not worth keeping.
	clientMaxMessage = 1 << 20
)

// DaemonError is an error the daemon reported for one request. The
// connection stays usable after it.
type DaemonError struct {
	Message string // ANSI escapes removed
}

func (e *DaemonError) Error() string { return e.Message }

var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]`)

func stripANSI(s string) string { return ansiEscape.ReplaceAllString(s, "") }

// Client is one connection to a nix-daemon. It is not safe for concurrent
// use. After any error other than a *DaemonError it is unusable, and so
// it is while a NAR reader holds it (see NarFromPath).
type Client struct {
	conn    io.ReadWriteCloser
	r       wireReader
	w       wireWriter
	ver     uint64 // min(client, daemon)
	version string // the daemon's Nix version, if sent
	broken  error
	closeMu sync.Once
}

// NewClient runs the handshake on conn. The Client owns conn from then on,
// also when the handshake fails. Cancelling ctx during the handshake closes
// conn.
func NewClient(ctx context.Context, conn io.ReadWriteCloser) (*Client, error) {
	c := &Client{
		conn: conn,
		r:    wireReader{r: bufio.NewReaderSize(conn, ioBufferSize)},
		w:    wireWriter{w: bufio.NewWriterSize(conn, ioBufferSize)},
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	err := c.handshake()
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("daemon handshake: %w", err)
	}
	return c, nil
}

func (c *Client) atLeast(m uint64) bool { return minor(c.ver) >= m }

func (c *Client) handshake() error {
	c.w.u64(workerMagic1)
	if err := c.w.flush(); err != nil {
		return err
	}
	magic, err := c.r.u64()
	if err != nil {
		return err
	}
	if magic != workerMagic2 {
		return fmt.Errorf("protocol mismatch: bad daemon magic %#x", magic)
	}
	dv, err := c.r.u64()
	if err != nil {
		return err
	}
	if major(dv) != 1 || dv < minDaemonVersion {
		return fmt.Errorf("daemon protocol version %d.%d is too old", major(dv), minor(dv))
	}
	c.ver = min(dv, clientVersion)
	c.w.u64(clientVersion)
	if c.atLeast(38) {
		c.w.strs(nil) // no features: plain 1.38 layouts
		if err := c.w.flush(); err != nil {
			return err
		}
		if err := c.r.skipStrs("daemon features", clientMaxList, clientMaxString); err != nil {
			return err
		}
	}
	c.w.u64(0) // no CPU affinity
	c.w.u64(0) // reserveSpace
	if err := c.w.flush(); err != nil {
		return err
	}
	if c.atLeast(33) {
		if c.version, err = c.r.str("daemon version", clientMaxString); err != nil {
			return err
		}
	}
	if c.atLeast(35) {
		if _, err := c.r.u64(); err != nil { // trusted
			return err
		}
	}
	return c.processStderr()
}

// DaemonVersion is the Nix version the daemon announced, or "" before
// protocol 1.33.
func (c *Client) DaemonVersion() string { return c.version }

// processStderr reads log messages up to STDERR_LAST (nil) or STDERR_ERROR
// (*DaemonError).
func (c *Client) processStderr() error {
	for {
		typ, err := c.r.u64()
		if err != nil {
			return err
		}
		switch typ {
		case stderrLast:
			return nil
		case stderrError:
			return c.readError()
		case stderrNext, stderrWrite:
			if err := c.r.skipStr("log message", clientMaxMessage); err != nil {
				return err
			}
		case stderrStartActivity:
			if err := c.skipInts(3); err != nil { // id, level, type
				return err
			}
			if err := c.r.skipStr("activity text", clientMaxMessage); err != nil {
				return err
			}
			if err := c.skipFields(); err != nil {
				return err
			}
			if err := c.skipInts(1); err != nil { // parent
				return err
			}
		case stderrStopActivity:
			if err := c.skipInts(1); err != nil {
				return err
			}
		case stderrResult:
			if err := c.skipInts(2); err != nil { // id, type
				return err
			}
			if err := c.skipFields(); err != nil {
				return err
			}
		case stderrRead:
			// No op this client sends has data to upload.
			return fmt.Errorf("daemon asked for data (STDERR_READ) unexpectedly")
		default:
			return fmt.Errorf("unknown stderr message type %#x", typ)
		}
	}
}

func (c *Client) skipInts(n int) error {
	for i := 0; i < n; i++ {
		if _, err := c.r.u64(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) skipFields() error {
	n, err := c.r.count("log fields", clientMaxList)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i++ {
		tag, err := c.r.u64()
		if err != nil {
			return err
		}
		switch tag {
		case 0:
			err = c.skipInts(1)
		case 1:
			err = c.r.skipStr("log field", clientMaxMessage)
		default:
			err = fmt.Errorf("unknown log field type %d", tag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) readError() error {
	if !c.atLeast(26) {
		msg, err := c.r.str("error message", clientMaxMessage)
		if err != nil {
			return err
		}
		if err := c.skipInts(1); err != nil { // exit status
			return err
		}
		return &DaemonError{Message: stripANSI(msg)}
	}
	typ, err := c.r.str("error type", clientMaxString)
	if err != nil {
		return err
	}
	if typ != "Error" {
		return fmt.Errorf("malformed daemon error of type %q", typ)
	}
	if err := c.skipInts(1); err != nil { // level
		return err
	}
	if err := c.r.skipStr("error name", clientMaxString); err != nil {
		return err
	}
	msg, err := c.r.str("error message", clientMaxMessage)
	if err != nil {
		return err
	}
	if havePos, err := c.r.u64(); err != nil {
		return err
	} else if havePos != 0 {
		return fmt.Errorf("malformed daemon error: position present")
	}
	n, err := c.r.count("error traces", clientMaxList)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i++ {
		if havePos, err := c.r.u64(); err != nil {
			return err
		} else if havePos != 0 {
			return fmt.Errorf("malformed daemon error: trace position present")
		}
		if err := c.r.skipStr("error trace", clientMaxMessage); err != nil {
			return err
		}
	}
	return &DaemonError{Message: stripANSI(msg)}
}

// call sends an op with string arguments and waits for STDERR_LAST. The
// reply is left for the caller to read; cancelling ctx closes the
// connection to unblock it.
func (c *Client) call(ctx context.Context, op uint64, args ...string) (stop func() bool, err error) {
	if c.broken != nil {
		return nil, fmt.Errorf("daemon connection unusable: %w", c.broken)
	}
	stop = context.AfterFunc(ctx, func() { _ = c.conn.Close() })
	c.w.u64(op)
	for _, a := range args {
		c.w.str(a)
	}
	if err := c.w.flush(); err != nil {
		stop()
		return nil, c.fail(ctx, err)
	}
	if err := c.processStderr(); err != nil {
		stop()
		var de *DaemonError
		if errors.As(err, &de) {
			return nil, err
		}
		return nil, c.fail(ctx, err)
	}
	return stop, nil
}

// fail marks the connection unusable and closes it.
func (c *Client) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = errors.Join(ctx.Err(), err)
	}
	c.broken = err
	_ = c.Close()
	return err
}

// finish ends a reply read that started after call returned.
func (c *Client) finish(ctx context.Context, stop func() bool, err error) error {
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	return nil
}

// QueryPathInfo returns (nil, nil) when path is not valid on the daemon.
func (c *Client) QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error) {
	if err := checkStorePath(path); err != nil {
		return nil, fmt.Errorf("query path info: %w", err)
	}
	stop, err := c.call(ctx, opQueryPathInfo, path)
	if err != nil {
		return nil, fmt.Errorf("query path info %s: %w", path, err)
	}
	info, err := c.readPathInfo(path)
	if err := c.finish(ctx, stop, err); err != nil {
		return nil, fmt.Errorf("query path info %s: %w", path, err)
	}
	return info, nil
}

func (c *Client) readPathInfo(path string) (*pathinfo.PathInfo, error) {
	valid, err := c.r.boolean()
	if err != nil || !valid {
		return nil, err
	}
	info := &pathinfo.PathInfo{Path: path}
	if info.Deriver, err = c.r.str("deriver", maxStorePathLen); err != nil {
		return nil, err
	}
	h, err := c.r.str("nar hash", maxShortLen)
	if err != nil {
		return nil, err
	}
	if info.NarHash, err = pathinfo.ParseNarHash(h); err != nil {
		return nil, err
	}
	if info.References, err = c.readStrs("references", maxStorePathLen); err != nil {
		return nil, err
	}
	regTime, err := c.r.u64()
	if err != nil {
		return nil, err
	}
	info.RegistrationTime = int64(regTime)
	if info.NarSize, err = c.r.u64(); err != nil {
		return nil, err
	}
	if info.Ultimate, err = c.r.boolean(); err != nil {
		return nil, err
	}
	if info.Sigs, err = c.readStrs("signatures", maxShortLen); err != nil {
		return nil, err
	}
	if info.CA, err = c.r.str("content address", maxShortLen); err != nil {
		return nil, err
	}
	return info, nil
}

// readStrs reads a list, growing it as entries arrive.
func (c *Client) readStrs(what string, max uint64) ([]string, error) {
	n, err := c.r.count(what, clientMaxList)
	if err != nil {
		return nil, err
	}
	var out []string
	var total uint64
	for i := uint64(0); i < n; i++ {
		s, err := c.r.str(what, max)
		if err != nil {
			return nil, err
		}
		if total += uint64(len(s)) + listEntryOverhead; total > clientMaxListBytes {
			return nil, fmt.Errorf("read %s: list larger than %d bytes", what, clientMaxListBytes)
		}
		out = append(out, s)
	}
	return out, nil
}

// QueryPathFromHashPart returns "" when no valid path has that hash part.
func (c *Client) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	// The daemon would splice anything else into a path.
	if len(hashPart) != 32 || nixbase32.ValidateString(hashPart) != nil {
		return "", nil
	}
	stop, err := c.call(ctx, opQueryPathFromHashPart, hashPart)
	if err != nil {
		return "", fmt.Errorf("query path from hash part %s: %w", hashPart, err)
	}
	p, err := c.r.str("store path", maxStorePathLen)
	if err := c.finish(ctx, stop, err); err != nil {
		return "", fmt.Errorf("query path from hash part %s: %w", hashPart, err)
	}
	return p, nil
}

// IsValidPath reports whether path is valid on the daemon.
func (c *Client) IsValidPath(ctx context.Context, path string) (bool, error) {
	if err := checkStorePath(path); err != nil {
		return false, fmt.Errorf("is valid path: %w", err)
	}
	stop, err := c.call(ctx, opIsValidPath, path)
	if err != nil {
		return false, fmt.Errorf("is valid path %s: %w", path, err)
	}
	ok, err := c.r.boolean()
	if err := c.finish(ctx, stop, err); err != nil {
		return false, fmt.Errorf("is valid path %s: %w", path, err)
	}
	return ok, nil
}

// NarFromPath streams the NAR of path. The Client is busy until the
// returned reader is closed: once the reader has returned the narSize
// bytes the daemon announced, the Client can be used for the next request
// (Usable), provided those bytes were the whole NAR, which only a check
// against the NAR's hash tells (a daemon whose database holds a wrong
// narSize sends more or fewer); a reader closed before its end closes the
// connection, and so does an invalid path.
//
// It sends QueryPathInfo and NarFromPath together, in one round trip:
// once a Nix daemon has started sending a NAR it cannot report a failure
// except by corrupting the stream (2.8 does exactly that for a missing
// path), so the NAR's length must come from the same connection, asked
// just before. The reader ends (io.EOF) after the narSize bytes that path
// info announced, so a caller that copies it to the end never waits on a
// connection that has nothing more to send.
func (c *Client) NarFromPath(ctx context.Context, path string) (io.ReadCloser, error) {
	if err := checkStorePath(path); err != nil {
		return nil, fmt.Errorf("nar from path: %w", err)
	}
	if c.broken != nil {
		return nil, fmt.Errorf("nar from path %s: daemon connection unusable: %w", path, c.broken)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.Close() })
	fail := func(err error) (io.ReadCloser, error) {
		stop()
		return nil, fmt.Errorf("nar from path %s: %w", path, c.fail(ctx, err))
	}
	c.w.u64(opQueryPathInfo)
	c.w.str(path)
	c.w.u64(opNarFromPath)
	c.w.str(path)
	if err := c.w.flush(); err != nil {
		return fail(err)
	}
	// Whatever goes wrong from here on, the daemon's answer to NarFromPath
	// is on its way and cannot be skipped without knowing its length: the
	// connection is closed, also after a daemon error.
	if err := c.processStderr(); err != nil {
		return fail(err)
	}
	info, err := c.readPathInfo(path)
	if err != nil {
		return fail(err)
	}
	if info == nil {
		_, err := fail(&DaemonError{Message: fmt.Sprintf("path '%s' is not valid", path)})
		return nil, err
	}
	if err := c.processStderr(); err != nil {
		return fail(err)
	}
	c.broken = errBusy
	// No NAR is empty: a narSize of 0 means the daemon does not know it
	// (paths registered without one), so where the NAR ends is unknown
	// and the connection cannot be used again.
	return &narStream{c: c, ctx: ctx, stop: stop, left: int64(info.NarSize), unknownEnd: info.NarSize == 0}, nil
}

var errBusy = errors.New("connection busy with a NAR reader")

type narStream struct {
	c          *Client
	ctx        context.Context
	stop       func() bool
	left       int64
	unknownEnd bool
	closed     bool
}

func (n *narStream) Read(p []byte) (int, error) {
	if n.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > n.left {
		p = p[:n.left]
	}
	k, err := n.c.r.r.Read(p)
	n.left -= int64(k)
	if err == io.EOF && n.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && n.left == 0 {
		err = io.EOF
	}
	return k, err
}

// Close hands the connection back to the Client when the whole NAR was
// read and ctx did not end meanwhile; otherwise it closes the connection.
func (n *narStream) Close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	if n.stop() && n.left == 0 && !n.unknownEnd {
		n.c.broken = nil
		return nil
	}
	_ = n.c.fail(n.ctx, errors.New("NAR reader closed before the end of the NAR"))
	return nil
}

// Usable reports whether the Client can take another request: it is not
// broken, and no NAR reader holds it.
func (c *Client) Usable() bool { return c.broken == nil }

// Close closes the connection.
func (c *Client) Close() error {
	var err error
	c.closeMu.Do(func() { err = c.conn.Close() })
	return err
}
