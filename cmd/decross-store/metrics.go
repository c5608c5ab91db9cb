package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/decross-store/decross-store/metrics"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/store"
)

// startMetrics serves metrics on addr until stop is called; with addr
// empty there are none (nil). It listens before returning, so a bad
// address stops serve at start. Metrics outlive ctx, the signal to shut
// down: a scrape during the drain still sees the sessions finishing.
func startMetrics(ctx context.Context, addr string, logger *slog.Logger) (m *metrics.Metrics, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics: %w", err)
	}
	m = metrics.New(version())
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- m.Serve(sctx, l) }()
	logger.Info("serving metrics", "listen", l.Addr().String(), "path", "/metrics")
	return m, func() {
		cancel()
		if err := <-done; err != nil {
			logger.Error("metrics server failed", "err", err)
		}
	}, nil
}

// storeHooks reports the store's work to m (none when m is nil).
func storeHooks(m *metrics.Metrics) store.Hooks {
	if m == nil {
		return store.Hooks{}
	}
	return store.Hooks{Rewrote: m.Rewrote, CacheHit: m.CacheHit, CacheMiss: m.CacheMiss, Upstream: m.UpstreamDone}
}

// observeCache makes every scrape of m read c's figures.
func observeCache(m *metrics.Metrics, c *narcache.Cache) {
	if m == nil {
		return
	}
	m.ObserveCache(func() metrics.CacheStats {
		st := c.Stats()
		return metrics.CacheStats{Entries: st.Entries, Bytes: st.Bytes, Hits: st.Hits, Misses: st.Misses, Evictions: st.Evictions}
	})
}
