package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/decross-store/decross-store/metrics"
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
