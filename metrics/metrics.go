package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/sshserver"
)

// The doors a request comes in by, the door label's values.
const (
	DoorSSH   = "ssh"   // the built-in SSH server
	DoorStdio = "stdio" // serve --stdio, behind OpenSSH
)

// ReasonLimit is the reason of errors_total for an SSH connection or
// session turned away by a limit; the other reasons are daemonproto's.
const ReasonLimit = "limit"

// opConnection is the op label of a refusal that happened before any
// request: the connection or session was turned away as a whole.
const opConnection = "connection"

const namespace = "decross_store"

// Metrics is a registry of decross-store's metrics. Its methods are safe
// for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec // door, op
	errors       *prometheus.CounterVec // door, op, reason
	servedBytes  *prometheus.CounterVec // door
	connections  prometheus.Gauge
	connsTotal   prometheus.Counter
	sessions     prometheus.Gauge
	sessTotal    prometheus.Counter
	refusals     *prometheus.CounterVec // limit
	cacheHits    prometheus.Counter
	cacheMisses  prometheus.Counter
	rewriteTime  prometheus.Histogram
	rewriteIn    prometheus.Counter
	rewriteOut   prometheus.Counter
	upstreamTime *prometheus.HistogramVec // op
	upstreamErrs *prometheus.CounterVec   // op

	cache *cacheCollector
}

// New returns the metrics of a server of the given version (as
// "decross-store version" prints it), with Go runtime and process metrics.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Worker-protocol requests answered, by door and operation (Handshake counts sessions that started).",
		}, []string{"door", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "errors_total",
			Help: "Requests answered with an error or failed, and SSH connections or sessions refused by a limit (op=\"connection\"), by door, operation and reason.",
		}, []string{"door", "op", "reason"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "served_bytes_total",
			Help: "NAR bytes sent to clients by NarFromPath, by door.",
		}, []string{"door"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ssh_connections",
			Help: "SSH connections open (in the handshake or authenticated).",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "ssh_connections_total",
			Help: "SSH connections that got a handshake slot.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ssh_sessions",
			Help: "nix-daemon sessions running over SSH.",
		}),
		sessTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "ssh_sessions_total",
			Help: "nix-daemon sessions started over SSH.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "ssh_refusals_total",
			Help: "SSH connections or sessions turned away, by the limit they ran into.",
		}, []string{"limit"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_hits_total",
			Help: "Paths the store answered from its cache of rewritten NARs.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_misses_total",
			Help: "Paths the store had to rewrite because the cache did not hold them.",
		}),
		rewriteTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rewrite_duration_seconds",
			Help: "Time to rewrite one path into the cache, from the first upstream byte to the cache entry written.",
			// 10 ms to about 3 minutes: a small path to a GiB-sized NAR.
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}),
		rewriteIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "rewrite_upstream_bytes_total",
			Help: "NAR bytes read from the upstream by rewrites.",
		}),
		rewriteOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "rewrite_output_bytes_total",
			Help: "Rewritten NAR bytes written into the cache.",
		}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help: "Latency of requests to the upstream nix-daemon, by operation.",
			// 1 ms to about a minute, the upstream query timeout.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"op"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_errors_total",
			Help: "Requests to the upstream nix-daemon that failed, by operation.",
		}, []string{"op"}),
		cache: newCacheCollector(),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; the version label names the running build.",
	}, []string{"version"})
	buildInfo.WithLabelValues(version).Set(1)
	// Refusals are rare, and an alert on their rate needs the series to
	// exist before the first one.
	for _, l := range []sshserver.Limit{sshserver.LimitQueueFull, sshserver.LimitQueueTimeout, sshserver.LimitConnections, sshserver.LimitSessions} {
		m.refusals.WithLabelValues(string(l))
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.requests, m.errors, m.servedBytes,
		m.connections, m.connsTotal, m.sessions, m.sessTotal, m.refusals,
		m.cacheHits, m.cacheMisses, m.cache,
		m.rewriteTime, m.rewriteIn, m.rewriteOut,
		m.upstreamTime, m.upstreamErrs,
	)
	return m
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A scrape must not take the server down, nor wait on a slow one.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Serve serves the metrics on /metrics of l until ctx is done, then
// shuts the HTTP server down, giving scrapes in progress a few seconds.
// It closes l.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{
		Handler: mux,
		// Clients that trickle their request or idle must not pile up.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	})
	defer stop()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: serve: %w", err)
}

// Protocol returns the hooks of a daemonproto.Server serving requests
// that come in by door (DoorSSH, DoorStdio).
func (m *Metrics) Protocol(door string) daemonproto.Hooks {
	return &protocolHooks{m: m, door: door, served: m.servedBytes.WithLabelValues(door)}
}

type protocolHooks struct {
	m      *Metrics
	door   string
	served prometheus.Counter
}

func (h *protocolHooks) Request(op string, reason daemonproto.Reason) {
	h.m.requests.WithLabelValues(h.door, op).Inc()
	if reason != "" {
		h.m.errors.WithLabelValues(h.door, op, string(reason)).Inc()
	}
}

func (h *protocolHooks) NarSent(n int64) { h.served.Add(float64(n)) }

// SSH returns the hooks of an sshserver.Server.
func (m *Metrics) SSH() sshserver.Hooks { return sshHooks{m} }

type sshHooks struct{ m *Metrics }

func (h sshHooks) ConnectionOpened() {
	h.m.connections.Inc()
	h.m.connsTotal.Inc()
}

func (h sshHooks) ConnectionClosed() { h.m.connections.Dec() }

func (h sshHooks) SessionStarted() {
	h.m.sessions.Inc()
	h.m.sessTotal.Inc()
}

func (h sshHooks) SessionEnded() { h.m.sessions.Dec() }

func (h sshHooks) Refused(l sshserver.Limit) {
	h.m.refusals.WithLabelValues(string(l)).Inc()
	h.m.errors.WithLabelValues(DoorSSH, opConnection, ReasonLimit).Inc()
}

// Rewrote records one path rewritten into the cache: the NAR bytes read
// from the upstream, the rewritten bytes written, and how long it took.
func (m *Metrics) Rewrote(upstreamBytes, servedBytes uint64, took time.Duration) {
	m.rewriteTime.Observe(took.Seconds())
	m.rewriteIn.Add(float64(upstreamBytes))
	m.rewriteOut.Add(float64(servedBytes))
}

// CacheHit records a path the store found in its cache.
func (m *Metrics) CacheHit() { m.cacheHits.Inc() }

// CacheMiss records a path the store had to rewrite.
func (m *Metrics) CacheMiss() { m.cacheMisses.Inc() }

// UpstreamDone records one request to the upstream (daemon or binary
// cache): op names it (a fixed name such as "QueryPathInfo", never a
// path), err is its result.
func (m *Metrics) UpstreamDone(op string, took time.Duration, err error) {
	m.upstreamTime.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		m.upstreamErrs.WithLabelValues(op).Inc()
	}
}

// CacheStats is what the cache of rewritten NARs reports about itself.
type CacheStats struct {
	Entries                 int
	Bytes                   int64
	Hits, Misses, Evictions uint64
}

// ObserveCache makes every scrape read the cache's state from stats,
// once per scrape. Until it is called the cache metrics are absent; a
// later call replaces stats.
func (m *Metrics) ObserveCache(stats func() CacheStats) { m.cache.set(stats) }

// cacheCollector reports CacheStats, read at scrape time.
type cacheCollector struct {
	mu    sync.Mutex
	stats func() CacheStats

	entries, bytes, lookups, evictions *prometheus.Desc
}

func newCacheCollector() *cacheCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "cache", n) }
	return &cacheCollector{
		entries:   prometheus.NewDesc(name("entries"), "Paths held by the cache of rewritten NARs.", nil, nil),
		bytes:     prometheus.NewDesc(name("size_bytes"), "Bytes on disk of the cache of rewritten NARs.", nil, nil),
		lookups:   prometheus.NewDesc(name("lookups_total"), "Lookups in the cache of rewritten NARs, by result (hit or miss).", []string{"result"}, nil),
		evictions: prometheus.NewDesc(name("evictions_total"), "Entries removed from the cache of rewritten NARs.", nil, nil),
	}
}

func (c *cacheCollector) set(stats func() CacheStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats = stats
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.entries, c.bytes, c.lookups, c.evictions} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	stats := c.stats
	c.mu.Unlock()
	if stats == nil {
		return
	}
	s := stats()
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(c.lookups, prometheus.CounterValue, float64(s.Hits), "hit")
	ch <- prometheus.MustNewConstMetric(c.lookups, prometheus.CounterValue, float64(s.Misses), "miss")
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.Evictions))
}
