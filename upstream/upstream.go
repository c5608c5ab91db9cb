package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/pathinfo"
)

// DefaultSocket is where nix-daemon listens unless told otherwise.
const DefaultSocket = "/nix/var/nix/daemon-socket/socket"

// maxIdle bounds the connections kept open between requests; a daemon
// forks a worker per connection, so hoarding them is not free.
const maxIdle = 8

// Daemon is a reader of one nix-daemon. Connections are dialled and
// handshaken lazily.
type Daemon struct {
	socket string
	dials  chan struct{} // semaphore: connections being opened at once

	mu     sync.Mutex
	idle   []*daemonproto.Client
	closed bool
}

// maxDials bounds the connections opened at once. nix-daemon listens with
// a small backlog (5 in Nix 2.8) and forks a worker per connection before
// it accepts the next, so a burst of concurrent connects overflows the
// backlog, which a unix socket reports as EAGAIN.
const maxDials = 2

// Open parses addr: "daemon" = /nix/var/nix/daemon-socket/socket (honour
// NIX_DAEMON_SOCKET_PATH), or "unix:///path/to/socket". It does not
// connect yet.
func Open(addr string) (*Daemon, error) {
	var socket string
	switch {
	case addr == "daemon" || addr == "unix://":
		socket = os.Getenv("NIX_DAEMON_SOCKET_PATH")
		if socket == "" {
			socket = DefaultSocket
		}
	case strings.HasPrefix(addr, "unix://"):
		socket = strings.TrimPrefix(addr, "unix://")
		if strings.Contains(socket, "?") {
			return nil, fmt.Errorf("open upstream %q: store parameters are not supported", addr)
		}
		if !strings.HasPrefix(socket, "/") {
			return nil, fmt.Errorf("open upstream %q: socket path must be absolute", addr)
		}
	default:
		return nil, fmt.Errorf("open upstream %q: want \"daemon\" or unix:///path/to/socket", addr)
	}
	return &Daemon{socket: socket, dials: make(chan struct{}, maxDials)}, nil
}

// Socket is the path of the daemon socket.
func (d *Daemon) Socket() string { return d.socket }

var errClosed = errors.New("upstream daemon reader closed")

func (d *Daemon) dial(ctx context.Context) (*daemonproto.Client, error) {
	select {
	case d.dials <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("connect to nix-daemon: %w", ctx.Err())
	}
	defer func() { <-d.dials }()
	var dialer net.Dialer
	var conn net.Conn
	var err error
	// A full backlog (other clients of the daemon) clears as the daemon
	// accepts: retry for a while before calling the daemon unreachable.
	for wait := 5 * time.Millisecond; ; wait *= 2 {
		conn, err = dialer.DialContext(ctx, "unix", d.socket)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || wait > time.Second {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nix-daemon: %w", ctx.Err())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect to nix-daemon: %w", err)
	}
	c, err := daemonproto.NewClient(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("connect to nix-daemon at %s: %w", d.socket, err)
	}
	return c, nil
}

// get takes an idle connection or opens a new one.
func (d *Daemon) get(ctx context.Context) (*daemonproto.Client, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errClosed
	}
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	return d.dial(ctx)
}

// put returns a healthy connection to the pool.
func (d *Daemon) put(c *daemonproto.Client) {
	d.mu.Lock()
	if !d.closed && len(d.idle) < maxIdle {
		d.idle = append(d.idle, c)
		c = nil
	}
	d.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// with runs fn on a pooled connection. After any error the connection is
// dropped: a fresh one costs a handshake, a desynchronised one costs wrong
// answers.
func (d *Daemon) with(ctx context.Context, fn func(*daemonproto.Client) error) error {
	c, err := d.get(ctx)
	if err != nil {
		return err
	}
	if err := fn(c); err != nil {
		_ = c.Close()
		return err
	}
	d.put(c)
	return nil
}

// QueryPathInfo returns (nil, nil) when path is not valid.
func (d *Daemon) QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error) {
	var info *pathinfo.PathInfo
	err := d.with(ctx, func(c *daemonproto.Client) error {
		var err error
		info, err = c.QueryPathInfo(ctx, path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return info, nil
}

// QueryPathFromHashPart returns "" when no valid path has that hash part.
func (d *Daemon) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	var p string
	err := d.with(ctx, func(c *daemonproto.Client) error {
		var err error
		p, err = c.QueryPathFromHashPart(ctx, hashPart)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("upstream: %w", err)
	}
	return p, nil
}

// NarFromPath streams the NAR of a valid path on a pooled connection. The
// reader ends after the narSize bytes the daemon's path info announced.
// A new connection costs the daemon a fork, so the reader's connection
// goes back to the pool when it is closed after the whole NAR was read and
// the caller vouched for it with Verified (the bytes matched the NAR's
// hash, so the stream held exactly that NAR and the connection is in
// sync); otherwise closing the reader closes the connection. Cancelling
// ctx closes the connection.
func (d *Daemon) NarFromPath(ctx context.Context, path string) (io.ReadCloser, error) {
	c, err := d.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	rc, err := c.NarFromPath(ctx, path)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return &pooledNAR{ReadCloser: rc, d: d, c: c}, nil
}

// Verifier is implemented by NAR readers that can do better once their
// caller has checked the NAR against its hash: a daemon connection is
// only reused then.
type Verifier interface {
	Verified()
}

type pooledNAR struct {
	io.ReadCloser
	d        *Daemon
	c        *daemonproto.Client
	verified bool
	done     bool
}

// Verified says the NAR read through p matched its hash.
func (p *pooledNAR) Verified() { p.verified = true }

func (p *pooledNAR) Close() error {
	if p.done {
		return nil
	}
	p.done = true
	err := p.ReadCloser.Close()
	if p.verified && p.c.Usable() {
		p.d.put(p.c)
	} else {
		_ = p.c.Close()
	}
	return err
}

// Close closes the idle connections; NAR readers stay open until closed.
func (d *Daemon) Close() error {
	d.mu.Lock()
	idle := d.idle
	d.idle, d.closed = nil, true
	d.mu.Unlock()
	var errs []error
	for _, c := range idle {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
