package sshserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Handler serves one `nix-daemon --stdio` session: rw is the channel's stdin
// and stdout. ctx is cancelled when the client closes the session or the
// connection, on Close, and when Shutdown gives up waiting. A non-nil error
// is reported to the client on stderr with exit status 1; stdout only ever
// carries what the handler writes. Once the handler returns, the session is
// closed, which also ends any Read of rw still blocked in another goroutine.
//
// Shutdown leaves ctx live so that requests in flight complete; a handler
// that may sit idle between requests should also watch ShuttingDown(ctx).
type Handler func(ctx context.Context, rw io.ReadWriter) error

type shutdownKey struct{}

// ShuttingDown returns a channel that is closed when Shutdown or Close
// begins on the server that started the handler with ctx (or with a parent
// of ctx). For any other context it returns nil, which never becomes ready.
//
// It lets a handler stop between requests rather than hold Shutdown until
// its deadline. The intended use is to read the next request in a goroutine
// and select on its arrival and on ShuttingDown(ctx): when shutdown wins,
// return nil, which ends the session and so the blocked read. A request
// that arrives in the same instant should be served first, so a handler
// that finds both ready prefers the request.
func ShuttingDown(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(shutdownKey{}).(chan struct{})
	return ch
}

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or
// Close.
var ErrServerClosed = errors.New("sshserver: server closed")

const (
	defaultHandshakeTimeout    = 30 * time.Second
	defaultMaxConnections      = 64
	defaultMaxStartups         = 32
	defaultMaxQueue            = 256
	defaultQueueTimeout        = 30 * time.Second
	defaultMaxSessionsPerConn  = 4
	defaultSessionCloseTimeout = 10 * time.Second

	fingerprintExt = "decross-store-key"
	serverVersion  = "SSH-2.0-decross-store"
)

// Server accepts SSH connections and runs Handler for every accepted
// `nix-daemon --stdio` exec request. A client is identified by its key
// alone; any user name is accepted. Set the exported fields before calling
// Serve and do not change them afterwards.
type Server struct {
	HostKey        ssh.Signer
	AuthorizedKeys []ssh.PublicKey // public-key auth only
	Handler        Handler
	Logger         *slog.Logger // nil = discard

	// HandshakeTimeout bounds each step before a handler runs: the SSH
	// handshake including authentication (from the moment the connection
	// gets its handshake slot), the wait for the first session channel,
	// and the wait for its exec request. Clients that stall cannot hold
	// slots. Zero means 30s.
	HandshakeTimeout time.Duration

	// MaxStartups caps connections in the handshake: from accept until
	// authenticated and admitted under MaxConnections. It is kept apart
	// from MaxConnections so that clients that connect and never
	// authenticate cannot lock real clients out. A connection beyond it
	// waits in a queue for a slot, before the server has sent anything.
	// Zero means 32.
	MaxStartups int
	// MaxStartupsPerSource caps the handshake slots one remote address
	// (one IPv6 /64) holds, so that one address can never take them all;
	// its further connections wait. Zero means half of MaxStartups.
	MaxStartupsPerSource int
	// MaxQueue caps connections waiting for a handshake slot. A freed
	// slot goes to the waiting addresses in turn, so a long queue from
	// one address does not starve another. A connection that finds the
	// queue full, or waits longer than QueueTimeout, is refused with its
	// reason in an SSH disconnect message (OpenSSH prints "Received
	// disconnect from …"). Zero means 256.
	MaxQueue int
	// MaxQueuePerSource caps the waiting connections of one address.
	// Zero means half of MaxQueue.
	MaxQueuePerSource int
	// QueueTimeout bounds a connection's wait for a handshake slot, and an
	// authenticated connection's wait for a MaxConnections slot. Zero
	// means 30s.
	QueueTimeout time.Duration
	// MaxConnections caps authenticated connections. A client that
	// authenticates beyond it waits (up to QueueTimeout, keeping its
	// handshake slot) for one to end; if none does, its session channel
	// is refused with the reason. Zero means 64.
	MaxConnections int
	// MaxSessionsPerConn caps concurrently open session channels on one
	// connection. Nix uses one per connection. Zero means 4. A session
	// counts until the client has acknowledged its end.
	MaxSessionsPerConn int
	// SessionCloseTimeout bounds how long a client may take to acknowledge
	// the end of a session (its channel close); a client that does not is
	// disconnected, since the channel's buffers live until then. Zero
	// means 10s.
	SessionCloseTimeout time.Duration

	// Ciphers lists the SSH ciphers offered, by x/crypto/ssh name. Empty
	// means DefaultCiphers: AES-GCM alone on amd64 with AES-NI, where
	// x/crypto/ssh's ChaCha20 is slow, and x/crypto/ssh's defaults
	// elsewhere.
	Ciphers []string

	// Hooks, when set, is told about connections, sessions and refusals,
	// for metrics.
	Hooks Hooks

	mu         sync.Mutex
	inShutdown bool
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	startups   *gate // MaxStartups and the queue
	refusals   refusalLog
	admitted   *gate           // MaxConnections
	ctx        context.Context // parent of every session context
	cancel     context.CancelFunc
	shutdownCh chan struct{} // closed when Shutdown or Close begins
	lingering  atomic.Int32  // refused connections being drained
}

// Hooks observes a Server. Its methods are called from the goroutines
// serving connections, several at once, some with the server's lock
// held: they should return quickly and must not call the Server.
type Hooks interface {
	// ConnectionOpened and ConnectionClosed bracket a connection that
	// got a handshake slot, whether or not it authenticates.
	ConnectionOpened()
	ConnectionClosed()
	// SessionStarted and SessionEnded bracket a nix-daemon session: a
	// run of the Handler.
	SessionStarted()
	SessionEnded()
	// Refused reports a connection or session turned away by a limit.
	Refused(limit Limit)
}

// Limit names what a refused connection or session ran into.
type Limit string

const (
	// LimitQueueFull: no handshake slot was free and the queue (or the
	// address's share of it) was full (MaxQueue, MaxQueuePerSource).
	LimitQueueFull Limit = "queue_full"
	// LimitQueueTimeout: no handshake slot came free within QueueTimeout.
	LimitQueueTimeout Limit = "queue_timeout"
	// LimitConnections: an authenticated client found no connection
	// slot (MaxConnections) within QueueTimeout.
	LimitConnections Limit = "max_connections"
	// LimitSessions: a session channel beyond MaxSessionsPerConn.
	LimitSessions Limit = "max_sessions"
)

// refused reports a refusal to the hooks when err is one of the limits'.
func (s *Server) refused(l Limit, err error) {
	if s.Hooks != nil && errors.Is(err, errTooMany) {
		s.Hooks.Refused(l)
	}
}

// conn is the server's record of one TCP connection that holds a
// handshake slot, guarded by Server.mu.
type conn struct {
	nc       net.Conn
	src      netip.Addr // clientNetwork of the remote
	startup  *ticket    // its MaxStartups slot, until admitted
	admitted *ticket    // its MaxConnections slot, once authenticated
	sessions int
	closed   bool
	idle     *time.Timer // closes the connection while it has no session
}

// ListenAndServe listens on the TCP address addr (":22" if empty) and calls
// Serve.
func (s *Server) ListenAndServe(addr string) error {
	if s.shuttingDown() {
		return ErrServerClosed
	}
	if addr == "" {
		addr = ":22"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sshserver: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l until l fails or the server is shut down,
// in which case it returns ErrServerClosed. Serve closes l on return.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if s.HostKey == nil {
		return errors.New("sshserver: Server.HostKey is nil")
	}
	if s.Handler == nil {
		return errors.New("sshserver: Server.Handler is nil")
	}
	if err := s.checkLimits(); err != nil {
		return err
	}
	log := s.logger()
	if len(s.AuthorizedKeys) == 0 {
		log.Warn("no authorized keys configured; every client will be refused")
	}
	cfg := s.sshConfig(log)

	ctx, ok := s.trackListener(&l, true)
	if !ok {
		return ErrServerClosed
	}
	startups := s.startups
	defer s.trackListener(&l, false)
	log.Info("listening", "addr", l.Addr().String())

	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if retryableAccept(err) {
				// Back off like net/http so fd exhaustion does not spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("sshserver: accept: %w", err)
		}
		delay = 0
		src := clientNetwork(nc.RemoteAddr())
		t, queued, err := startups.enter(src)
		if err != nil {
			s.refusals.warn(log, "connection refused", "remote", nc.RemoteAddr().String(), "reason", err)
			s.refused(LimitQueueFull, err)
			s.refuseFromAccept(nc, err)
			continue
		}
		go s.serveConn(ctx, cfg, nc, src, t, queued)
	}
}

// refusalLog writes at most one refusal warning a second; a flood of
// connections must not make the accept loop wait on the log, nor bury
// the rest of it. The next warning says how many were left out.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusalLog) warn(log *slog.Logger, msg string, args ...any) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < time.Second {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.last = now
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "refusals_not_logged", n)
	}
	log.Warn(msg, args...)
}

func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS)
}

// Shutdown stops accepting connections, closes idle ones, and waits for
// active sessions to end; handler contexts stay live meanwhile, so work in
// flight (a NAR transfer, say) completes. If ctx ends first it cancels the
// remaining sessions, closes their connections, and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.beginShutdownLocked()
	err := s.closeListenersLocked()
	s.mu.Unlock()

	// Polling, as net/http does: sessions end rarely and a busy shutdown
	// is not worth a notification path through every session.
	const maxPoll = 200 * time.Millisecond
	poll := time.Millisecond
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		if s.closeIdleConns() {
			s.mu.Lock()
			if s.cancel != nil {
				s.cancel()
			}
			s.mu.Unlock()
			return err
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-t.C:
			poll = min(2*poll, maxPoll)
			t.Reset(poll)
		}
	}
}

// Close stops accepting connections, cancels every session's context and
// closes every connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.beginShutdownLocked()
	err := s.closeListenersLocked()
	s.mu.Unlock()
	s.closeAll()
	return err
}

func (s *Server) beginShutdownLocked() {
	if !s.inShutdown && s.shutdownCh != nil {
		close(s.shutdownCh)
	}
	s.inShutdown = true
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	for c := range s.conns {
		c.nc.Close()
		c.closed = true
	}
}

func (s *Server) closeListenersLocked() error {
	var err error
	for l := range s.listeners {
		if cerr := (*l).Close(); cerr != nil && err == nil {
			err = fmt.Errorf("sshserver: close listener: %w", cerr)
		}
	}
	clear(s.listeners)
	return err
}

// closeIdleConns closes connections without sessions and reports whether
// no connection has one.
func (s *Server) closeIdleConns() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiet := true
	for c := range s.conns {
		if c.sessions > 0 {
			quiet = false
			continue
		}
		if !c.closed {
			c.nc.Close()
			c.closed = true
		}
	}
	return quiet
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inShutdown
}

func (s *Server) trackListener(l *net.Listener, add bool) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return nil, true
	}
	if s.inShutdown {
		return nil, false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	if s.ctx == nil {
		s.shutdownCh = make(chan struct{})
		s.ctx, s.cancel = context.WithCancel(context.WithValue(context.Background(), shutdownKey{}, s.shutdownCh))
		startups := orDefault(s.MaxStartups, defaultMaxStartups)
		queue := orDefault(s.MaxQueue, defaultMaxQueue)
		s.startups = newGate("handshake slot", startups, orDefault(s.MaxStartupsPerSource, max(startups/2, 1)),
			queue, orDefault(s.MaxQueuePerSource, max(queue/2, 1)))
		// Connections waiting here keep their handshake slot, so there are
		// never more than MaxStartups of them; every address may use every
		// slot, and the queue only serves them in turn.
		conns := orDefault(s.MaxConnections, defaultMaxConnections)
		s.admitted = newGate("connection slot", conns, conns, startups, startups)
	}
	s.listeners[l] = struct{}{}
	return s.ctx, true
}

// trackConn records a connection that holds handshake slot t, unless the
// server is shutting down.
func (s *Server) trackConn(nc net.Conn, src netip.Addr, t *ticket) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown {
		return nil, errStopped
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	c := &conn{nc: nc, src: src, startup: t}
	s.conns[c] = struct{}{}
	return c, nil
}

func (s *Server) untrackConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.nc.Close()
	c.closed = true
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if c.startup != nil {
		s.startups.release(c.startup)
	}
	if c.admitted != nil {
		s.admitted.release(c.admitted)
	}
}

// clientNetwork is what the per-source limits count by: the IPv4
// address, or the /64 of an IPv6 address, since one IPv6 host usually
// holds a whole /64 and could otherwise take every slot alone. It is the
// zero Addr when the remote is not an IP address.
func clientNetwork(a net.Addr) netip.Addr {
	ip, ok := remoteIP(a)
	if !ok || ip.Is4() {
		return ip
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// admit moves an authenticated connection from its handshake slot to a
// MaxConnections slot, waiting for one if need be. The handshake slot is
// kept while it waits, which bounds the number of waiters.
func (s *Server) admit(ctx context.Context, c *conn, log *slog.Logger) error {
	t, queued, err := s.admitted.enter(c.src)
	if err != nil {
		return err
	}
	if queued {
		start := time.Now()
		log.Info("waiting for a connection slot", "limit", orDefault(s.MaxConnections, defaultMaxConnections))
		if err := s.admitted.wait(t, s.queueTimeout(), ShuttingDown(ctx)); err != nil {
			return err
		}
		log.Info("connection slot granted", "waited", time.Since(start))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown || c.closed {
		s.admitted.release(t)
		return errStopped
	}
	c.admitted = t
	s.startups.release(c.startup)
	c.startup = nil
	return nil
}

// checkLimits refuses negative limits, which would otherwise silently
// mean the default.
func (s *Server) checkLimits() error {
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"HandshakeTimeout", int64(s.HandshakeTimeout)},
		{"MaxStartups", int64(s.MaxStartups)},
		{"MaxStartupsPerSource", int64(s.MaxStartupsPerSource)},
		{"MaxQueue", int64(s.MaxQueue)},
		{"MaxQueuePerSource", int64(s.MaxQueuePerSource)},
		{"QueueTimeout", int64(s.QueueTimeout)},
		{"MaxConnections", int64(s.MaxConnections)},
		{"MaxSessionsPerConn", int64(s.MaxSessionsPerConn)},
		{"SessionCloseTimeout", int64(s.SessionCloseTimeout)},
	} {
		if l.v < 0 {
			return fmt.Errorf("sshserver: Server.%s is negative", l.name)
		}
	}
	return nil
}

// orDefault is v, or def when v is zero (or negative): the meaning of a
// zero limit or timeout field.
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// startSession claims a session slot on c; a closing server or connection
// takes no new sessions.
func (s *Server) startSession(c *conn) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown || c.closed {
		return false, "server shutting down"
	}
	limit := orDefault(s.MaxSessionsPerConn, defaultMaxSessionsPerConn)
	if c.sessions >= limit {
		s.refused(LimitSessions, errTooMany)
		return false, fmt.Sprintf("session limit %d reached", limit)
	}
	c.sessions++
	return true, ""
}

// closeIfIdle closes c if it has no session open.
func (s *Server) closeIfIdle(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sessions > 0 || c.closed {
		return false
	}
	c.nc.Close()
	c.closed = true
	return true
}

// endSession releases a session slot; a connection left without sessions
// may stay open for another HandshakeTimeout.
func (s *Server) endSession(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sessions--; c.sessions == 0 && c.idle != nil && !c.closed {
		c.idle.Reset(s.handshakeTimeout())
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) handshakeTimeout() time.Duration {
	return orDefault(s.HandshakeTimeout, defaultHandshakeTimeout)
}

func (s *Server) queueTimeout() time.Duration {
	return orDefault(s.QueueTimeout, defaultQueueTimeout)
}

// sshConfig builds the per-Serve SSH configuration. The key set is copied
// so that the callback never reads the caller's slice concurrently.
func (s *Server) sshConfig(log *slog.Logger) *ssh.ServerConfig {
	allowed := make(map[string][]*AuthorizedKey, len(s.AuthorizedKeys))
	for _, k := range s.AuthorizedKeys {
		ak, ok := k.(*AuthorizedKey)
		if !ok {
			ak = &AuthorizedKey{PublicKey: k}
		}
		id := string(k.Marshal())
		allowed[id] = append(allowed[id], ak)
	}
	cfg := &ssh.ServerConfig{
		// Only PublicKeyCallback is set, so password and
		// keyboard-interactive are never offered and always fail.
		PublicKeyCallback: func(md ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if _, cert := key.(*ssh.Certificate); cert {
				log.Info("public key refused", "remote", md.RemoteAddr().String(), "user", md.User(), "key", fingerprint(key), "reason", "certificates are not supported")
				return nil, errors.New("certificates are not supported")
			}
			lines, ok := allowed[string(key.Marshal())]
			if !ok {
				log.Info("public key refused", "remote", md.RemoteAddr().String(), "user", md.User(), "key", fingerprint(key))
				return nil, errors.New("public key not authorized")
			}
			now := time.Now()
			for _, ak := range lines {
				if err := ak.Permits(md.RemoteAddr(), now); err != nil {
					log.Info("public key refused", "remote", md.RemoteAddr().String(), "user", md.User(), "key", fingerprint(key), "line", ak.Source, "reason", err)
					continue
				}
				return &ssh.Permissions{Extensions: map[string]string{fingerprintExt: fingerprint(key)}}, nil
			}
			return nil, errors.New("public key not permitted")
		},
		AuthLogCallback: func(md ssh.ConnMetadata, method string, err error) {
			// Clients always probe "none" first; it carries no information.
			if err == nil || method == "none" || method == "publickey" {
				return
			}
			log.Info("authentication refused", "remote", md.RemoteAddr().String(), "user", md.User(), "method", method)
		},
		ServerVersion: serverVersion,
	}
	cfg.Ciphers = s.Ciphers
	if len(cfg.Ciphers) == 0 {
		cfg.Ciphers = DefaultCiphers()
	}
	cfg.AddHostKey(s.HostKey)
	return cfg
}

// serveConn serves a connection that holds handshake slot t, or waits
// for it in the queue first.
func (s *Server) serveConn(base context.Context, cfg *ssh.ServerConfig, nc net.Conn, src netip.Addr, t *ticket, queued bool) {
	start := time.Now()
	log := s.logger().With("remote", nc.RemoteAddr().String())
	var waited []any
	if queued {
		log.Debug("connection waiting for a handshake slot")
		if err := s.startups.wait(t, s.queueTimeout(), ShuttingDown(base)); err != nil {
			s.refusals.warn(log, "connection refused", "reason", err, "waited", time.Since(start))
			s.refused(LimitQueueTimeout, err)
			refuse(nc, err, true)
			return
		}
		waited = []any{"waited", time.Since(start)}
		start = time.Now()
	}
	c, err := s.trackConn(nc, src, t)
	if err != nil {
		s.startups.release(t)
		refuse(nc, err, true)
		return
	}
	defer s.untrackConn(c)
	if s.Hooks != nil {
		s.Hooks.ConnectionOpened()
		defer s.Hooks.ConnectionClosed()
	}
	log.Info("connection opened", waited...)

	_ = c.nc.SetDeadline(start.Add(s.handshakeTimeout()))
	sc, chans, reqs, err := ssh.NewServerConn(c.nc, cfg)
	if err != nil {
		log.Info("connection closed during handshake", "err", err, "duration", time.Since(start))
		return
	}
	defer sc.Close()
	_ = c.nc.SetDeadline(time.Time{})
	// Global requests are tcpip-forward and friends: all refused. They
	// are read from now on, since an unread one would stall the
	// connection while it waits for admission.
	go ssh.DiscardRequests(reqs)
	log = log.With("user", sc.User(), "key", sc.Permissions.Extensions[fingerprintExt])
	if err := s.admit(base, c, log); err != nil {
		log.Warn("connection refused after authentication", "reason", err)
		s.refused(LimitConnections, err)
		s.refuseSessions(sc, chans, err)
		return
	}
	var cipher string
	if a, ok := sc.Conn.(ssh.AlgorithmsConnMetadata); ok {
		cipher = a.Algorithms().Write.Cipher
	}
	log.Info("authenticated", "client", clip(string(sc.ClientVersion())), "cipher", cipher)

	s.mu.Lock()
	c.idle = time.AfterFunc(s.handshakeTimeout(), func() {
		if s.closeIfIdle(c) {
			log.Info("closing connection: no session open", "timeout", s.handshakeTimeout())
		}
	})
	s.mu.Unlock()
	defer c.idle.Stop()

	ctx, cancel := context.WithCancel(base)
	defer cancel()

	for nch := range chans {
		if t := nch.ChannelType(); t != "session" {
			log.Info("channel refused", "type", clip(t))
			_ = nch.Reject(ssh.Prohibited, fmt.Sprintf("channel type %q is not supported", clip(t)))
			continue
		}
		if ok, why := s.startSession(c); !ok {
			log.Info("session refused", "reason", why)
			_ = nch.Reject(ssh.ResourceShortage, why)
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			s.endSession(c)
			log.Info("accept channel failed", "err", err)
			continue
		}
		go func() {
			defer s.endSession(c)
			sessionOver := make(chan struct{})
			reqs, acknowledged := forwardRequests(creqs, sessionOver)
			s.serveSession(ctx, log, ch, reqs)
			close(sessionOver)
			// The slot is the channel's buffers, which x/crypto keeps until
			// the client answers our close.
			t := time.NewTimer(orDefault(s.SessionCloseTimeout, defaultSessionCloseTimeout))
			defer t.Stop()
			select {
			case <-acknowledged:
			case <-t.C:
				log.Info("closing connection: session close not acknowledged")
				sc.Close()
				<-acknowledged
			}
		}()
	}
	// The connection is gone; sessions still running must stop too.
	cancel()
	log.Info("connection closed", "duration", time.Since(start))
}

// forwardRequests passes a session's requests on until stop, then refuses
// them itself. acknowledged is closed when in is, which x/crypto does once
// both sides have closed the channel (or the connection is gone).
func forwardRequests(in <-chan *ssh.Request, stop <-chan struct{}) (out <-chan *ssh.Request, acknowledged <-chan struct{}) {
	fwd := make(chan *ssh.Request)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(fwd)
		for r := range in {
			select {
			case fwd <- r:
			case <-stop:
				if r.WantReply {
					_ = r.Reply(false, nil)
				}
			}
		}
	}()
	return fwd, done
}

// serveSession waits for the exec request on a session channel, refusing
// every other request, and runs the handler for an accepted command.
func (s *Server) serveSession(ctx context.Context, log *slog.Logger, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	timer := time.NewTimer(s.handshakeTimeout())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ShuttingDown(ctx):
			log.Info("session closed before its exec request: server shutting down")
			_, _ = io.WriteString(ch.Stderr(), "decross-store: server shutting down\n")
			finish(ch, 1)
			return
		case <-timer.C:
			log.Info("session closed: no exec request in time")
			return
		case req, ok := <-reqs:
			if !ok {
				return
			}
			switch req.Type {
			case "exec":
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil {
					log.Info("malformed exec request", "err", err)
					_ = req.Reply(false, nil)
					continue
				}
				s.exec(ctx, log, ch, req, p.Command, reqs)
				return
			case "shell":
				// Without this line the user only sees "shell request failed".
				_, _ = io.WriteString(ch.Stderr(), "decross-store: interactive shells are not available; this host serves a Nix store over ssh-ng://\n")
				log.Info("request refused", "type", req.Type)
				_ = req.Reply(false, nil)
			default:
				// pty-req, subsystem, x11-req, auth-agent-req@openssh.com,
				// env, signal, ...: nothing here needs them.
				log.Debug("request refused", "type", clip(req.Type))
				if req.WantReply {
					_ = req.Reply(false, nil)
				}
			}
		}
	}
}

func (s *Server) exec(ctx context.Context, log *slog.Logger, ch ssh.Channel, req *ssh.Request, cmdline string, reqs <-chan *ssh.Request) {
	log = log.With("command", clip(cmdline))
	cmd, perr := parseCommand(cmdline)

	// The request is accepted even for a refused command so the client
	// gets the explanation on stderr and an exit status, like a shell
	// reporting "command not found".
	_ = req.Reply(true, nil)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// Unread requests would stall the whole connection. The channel
		// closes when the client closes the session, which counts as a
		// disconnect for the handler.
		for r := range reqs {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
		cancel()
	}()

	if perr != nil {
		log.Info("exec refused", "err", perr)
		_, _ = fmt.Fprintf(ch.Stderr(), "decross-store: %v\n", perr)
		finish(ch, 127)
		return
	}
	// A session that starts once shutdown has begun would only see its
	// handler return at once: say why instead.
	select {
	case <-ShuttingDown(ctx):
		log.Info("exec refused: server shutting down")
		_, _ = io.WriteString(ch.Stderr(), "decross-store: server shutting down\n")
		finish(ch, 1)
		return
	default:
	}
	log.Info("exec", "store", clip(cmd.store), "process_ops", cmd.processOps)
	start := time.Now()
	if s.Hooks != nil {
		s.Hooks.SessionStarted()
	}
	err := s.runHandler(sctx, log, ch)
	if s.Hooks != nil {
		s.Hooks.SessionEnded()
	}
	log.Info("session ended", "duration", time.Since(start), "err", err)
	status := uint32(0)
	if err != nil {
		status = 1
		_, _ = fmt.Fprintf(ch.Stderr(), "decross-store: %v\n", err)
	}
	finish(ch, status)
}

// sessionIO hides the ssh.Channel so handlers cannot close it or write to
// stderr behind the server's back.
type sessionIO struct {
	io.Reader
	io.Writer
}

func (s *Server) runHandler(ctx context.Context, log *slog.Logger, ch ssh.Channel) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("handler panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = errors.New("internal server error")
		}
	}()
	return s.Handler(ctx, sessionIO{ch, ch})
}

// finish ends a session the way OpenSSH's sshd does: EOF, exit-status,
// then close.
func finish(ch ssh.Channel, status uint32) {
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = ch.Close()
}
