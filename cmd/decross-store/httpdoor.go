package main

import (
	"golang.org/x/net/netutil"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/httpcache"
	"github.com/decross-store/decross-store/metrics"
	"github.com/decross-store/decross-store/store"
)

// doorHTTP is the door label of the HTTP binary cache's metrics.
const doorHTTP = "http"

// httpDoor is serve's HTTP binary cache. A nil *httpDoor is the door
// turned off: its methods do nothing, and its errors channel never fires.
type httpDoor struct {
	srv  *http.Server
	l    net.Listener
	done chan error
}

// listenHTTP listens on addr (nil, nil when addr is empty), so that a bad
// address stops serve at start.
func listenHTTP(addr string, priority, maxRequests int, st *store.Store, m *metrics.Metrics, logger *slog.Logger) (*httpDoor, error) {
	if addr == "" {
		return nil, nil
	}
	cfg := httpcache.Config{Store: st, Priority: priority, Logger: logger}
	if m != nil {
		cfg.Hooks = httpHooks{m.Protocol(doorHTTP)}
	}
	h, err := httpcache.New(cfg)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	// Requests are what costs (a NAR file open, a rewrite to wait for):
	// they are bounded, and more wait for a slot. Connections are bounded
	// only far above that, for file descriptors: Nix keeps idle
	// connections open (http-connections, 25 per client), and counting
	// those would let a few clients starve the rest.
	l = netutil.LimitListener(l, maxRequests*connectionsPerRequest)
	d := &httpDoor{srv: httpcache.NewServer(limitRequests(h, maxRequests), logger), l: l, done: make(chan error, 1)}
	logger.Info("listening", "door", "http", "addr", l.Addr().String())
	go func() {
		err := d.srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		d.done <- err
	}()
	return d, nil
}

// addr is where the door listens, "" when it is off.
func (d *httpDoor) addr() string {
	if d == nil {
		return ""
	}
	return d.l.Addr().String()
}

// errors delivers the door's failure (nil once shut down).
func (d *httpDoor) errors() <-chan error {
	if d == nil {
		return nil
	}
	return d.done
}

// shutdown stops accepting requests and waits until those in progress
// have finished, or ctx ends (then it cuts them).
func (d *httpDoor) shutdown(ctx context.Context) error {
	if d == nil {
		return nil
	}
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.srv.Close()
		err = fmt.Errorf("http shutdown: %w", err)
	}
	return errors.Join(err, <-d.done)
}

// httpHooks counts the HTTP door's requests with the protocol doors'
// metrics.
type httpHooks struct{ h daemonproto.Hooks }

func (h httpHooks) Request(op, reason string) { h.h.Request(op, daemonproto.Reason(reason)) }
func (h httpHooks) NarSent(n int64)           { h.h.NarSent(n) }

// shutdownContext bounds a shutdown that follows a failure at start or of
// the other door: requests in progress get the shutdown timeout, as on a
// signal, and no more.
func shutdownContext(timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	context.AfterFunc(ctx, cancel) // releases the timer once it fires
	return ctx
}

// connectionsPerRequest is how many connections may be open per request
// slot, mostly idle keep-alive ones.
const connectionsPerRequest = 16

// limitRequests lets at most n requests into h at once; the others wait
// for a slot as long as their client does.
func limitRequests(h http.Handler, n int) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
		case <-r.Context().Done():
			panic(http.ErrAbortHandler) // the client left while waiting
		}
		defer func() { <-slots }()
		h.ServeHTTP(w, r)
	})
}
