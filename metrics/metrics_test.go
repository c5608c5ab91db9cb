package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/sshserver"
)

// serve runs m.Serve on a fresh 127.0.0.1 port and returns the URL of
// its metrics; the server stops with the test, and must stop cleanly.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return "http://" + l.Addr().String() + "/metrics"
}

// scrape fetches url and parses it as Prometheus does.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// sample is one series to look for: name and labels ("k=v,k=v"), the
// family's type, and its value (a histogram's sample count).
type sample struct {
	name   string
	labels string
	typ    dto.MetricType
	value  float64
}

func labelString(m *dto.Metric) string {
	var kv []string
	for _, l := range m.GetLabel() {
		kv = append(kv, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(kv, ",")
}

// find returns the value of s's series in fams.
func find(fams map[string]*dto.MetricFamily, s sample) (float64, error) {
	f, ok := fams[s.name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", s.name)
	}
	if f.GetType() != s.typ {
		return 0, fmt.Errorf("%s is a %v, want a %v", s.name, f.GetType(), s.typ)
	}
	var have []string
	for _, m := range f.GetMetric() {
		ls := labelString(m)
		if ls != s.labels {
			have = append(have, "{"+ls+"}")
			continue
		}
		switch s.typ {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), nil
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), nil
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), nil
		}
		return 0, fmt.Errorf("%s: type %v not handled", s.name, s.typ)
	}
	return 0, fmt.Errorf("%s has no series {%s}, only %v", s.name, s.labels, have)
}

const (
	counter   = dto.MetricType_COUNTER
	gauge     = dto.MetricType_GAUGE
	histogram = dto.MetricType_HISTOGRAM
)

func TestFreshScrape(t *testing.T) {
	fams := scrape(t, serve(t, New("decross-store v1.2.3")))
	for _, s := range []sample{
		{"decross_store_build_info", "version=decross-store v1.2.3", gauge, 1},
		{"decross_store_ssh_refusals_total", "limit=queue_full", counter, 0},
		{"decross_store_ssh_refusals_total", "limit=max_connections", counter, 0},
		{"decross_store_ssh_connections", "", gauge, 0},
		{"decross_store_ssh_sessions", "", gauge, 0},
		{"decross_store_cache_hits_total", "", counter, 0},
		{"decross_store_rewrite_duration_seconds", "", histogram, 0},
	} {
		got, err := find(fams, s)
		if err != nil {
			t.Error(err)
		} else if got != s.value {
			t.Errorf("%s{%s} = %v, want %v", s.name, s.labels, got, s.value)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	// Until ObserveCache, nothing would tell a real zero from no cache.
	if _, ok := fams["decross_store_cache_entries"]; ok {
		t.Error("decross_store_cache_entries present before ObserveCache")
	}
}

// TestCountersMove checks that each call moves its metrics, as seen by a
// scrape.
func TestCountersMove(t *testing.T) {
	tests := []struct {
		name string
		act  func(m *Metrics)
		want []sample
	}{
		{"requests", func(m *Metrics) {
			h := m.Protocol(DoorSSH)
			h.Request("Handshake", "")
			h.Request("QueryPathInfo", "")
			h.Request("NarFromPath", "")
			h.NarSent(1000)
			h.NarSent(24)
			h.Request("NarFromPath", daemonproto.ReasonNotServed)
			m.Protocol(DoorStdio).Request("AddToStore", daemonproto.ReasonRefusedWrite)
		}, []sample{
			{"decross_store_requests_total", "door=ssh,op=Handshake", counter, 1},
			{"decross_store_requests_total", "door=ssh,op=QueryPathInfo", counter, 1},
			{"decross_store_requests_total", "door=ssh,op=NarFromPath", counter, 2},
			{"decross_store_requests_total", "door=stdio,op=AddToStore", counter, 1},
			{"decross_store_errors_total", "door=ssh,op=NarFromPath,reason=not_served", counter, 1},
			{"decross_store_errors_total", "door=stdio,op=AddToStore,reason=refused_write", counter, 1},
			{"decross_store_served_bytes_total", "door=ssh", counter, 1024},
		}},
		{"ssh", func(m *Metrics) {
			h := m.SSH()
			h.ConnectionOpened()
			h.ConnectionOpened()
			h.SessionStarted()
			h.SessionStarted()
			h.SessionEnded()
			h.ConnectionClosed()
			h.Refused(sshserver.LimitQueueTimeout)
		}, []sample{
			{"decross_store_ssh_connections", "", gauge, 1},
			{"decross_store_ssh_connections_total", "", counter, 2},
			{"decross_store_ssh_sessions", "", gauge, 1},
			{"decross_store_ssh_sessions_total", "", counter, 2},
			{"decross_store_ssh_refusals_total", "limit=queue_timeout", counter, 1},
			{"decross_store_ssh_refusals_total", "limit=queue_full", counter, 0},
			{"decross_store_errors_total", "door=ssh,op=connection,reason=limit", counter, 1},
		}},
		{"store", func(m *Metrics) {
			m.CacheHit()
			m.CacheHit()
			m.CacheMiss()
			m.Rewrote(4096, 4000, 250*time.Millisecond)
			m.UpstreamDone("QueryPathInfo", 2*time.Millisecond, nil)
			m.UpstreamDone("NarFromPath", time.Second, errors.New("daemon gone"))
		}, []sample{
			{"decross_store_cache_hits_total", "", counter, 2},
			{"decross_store_cache_misses_total", "", counter, 1},
			{"decross_store_rewrite_duration_seconds", "", histogram, 1},
			{"decross_store_rewrite_upstream_bytes_total", "", counter, 4096},
			{"decross_store_rewrite_output_bytes_total", "", counter, 4000},
			{"decross_store_upstream_request_duration_seconds", "op=QueryPathInfo", histogram, 1},
			{"decross_store_upstream_request_duration_seconds", "op=NarFromPath", histogram, 1},
			{"decross_store_upstream_errors_total", "op=NarFromPath", counter, 1},
		}},
		{"cache", func(m *Metrics) {
			var calls uint64
			m.ObserveCache(func() CacheStats {
				calls++
				return CacheStats{Entries: 3, Bytes: 1 << 20, Hits: 7, Misses: 2, Evictions: calls}
			})
		}, []sample{
			{"decross_store_cache_entries", "", gauge, 3},
			{"decross_store_cache_size_bytes", "", gauge, 1 << 20},
			{"decross_store_cache_lookups_total", "result=hit", counter, 7},
			{"decross_store_cache_lookups_total", "result=miss", counter, 2},
			// Read once per scrape, so the values are consistent.
			{"decross_store_cache_evictions_total", "", counter, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			url := serve(t, m)
			tt.act(m)
			fams := scrape(t, url)
			for _, s := range tt.want {
				got, err := find(fams, s)
				if err != nil {
					t.Error(err)
				} else if got != s.value {
					t.Errorf("%s{%s} = %v, want %v", s.name, s.labels, got, s.value)
				}
			}
		})
	}
}

// Two Metrics never share a series: there is no global registry.
func TestIndependentRegistries(t *testing.T) {
	a, b := New("a"), New("b")
	a.CacheHit()
	got, err := find(scrape(t, serve(t, b)), sample{"decross_store_cache_hits_total", "", counter, 0})
	if err != nil || got != 0 {
		t.Fatalf("b's cache hits = %v, %v; want 0", got, err)
	}
}
