package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetrics runs real clients against a server with --metrics and
// checks, in a real scrape, that what they did was counted.
func TestMetrics(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	srv := startServer(t, mappingFile, "--metrics", "127.0.0.1:0")
	// Logged before the SSH server's "serving" line, which startServer
	// waited for.
	m := regexp.MustCompile(`msg="serving metrics" listen=(\S+)`).FindStringSubmatch(srv.logs())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", srv.logs())
	}
	metricsURL := "http://" + m[1] + "/metrics"
	url := srv.url(srv.clientKey)
	ctx := testContext(t, 3*time.Minute)
	hello, leaky := ex.Get(t, "hello"), ex.Get(t, "leaky")

	out, _, err := srv.nix(ctx, "", "nix", "path-info", "--json", "-r", "--store", url, hello.Native)
	if err != nil {
		t.Fatal(err)
	}
	var closureBytes float64
	for _, info := range pathInfoJSON(t, out) {
		closureBytes += float64(info.NarSize)
	}
	dest := filepath.Join(work, "dest")
	t.Cleanup(func() { makeWritable(t, dest) })
	if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, hello.Native); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, leaky.Native); err == nil {
		t.Fatal("path-info of the leaky script succeeded; want it not served")
	}
	if _, _, err := srv.nix(ctx, "", "nix", "copy", "--to", url, ex.Get(t, "bash").Cross); err == nil {
		t.Fatal("nix copy --to succeeded; want a read-only refusal")
	}

	fams := scrapeMetrics(ctx, t, metricsURL)
	for _, c := range []struct {
		name, labels string
		check        func(float64) bool
		want         string
	}{
		{"decross_store_requests_total", "door=ssh,op=Handshake", atLeast(4), ">= 4 (one per nix command)"},
		{"decross_store_requests_total", "door=ssh,op=QueryPathInfo", atLeast(1), ">= 1"},
		{"decross_store_requests_total", "door=ssh,op=NarFromPath", atLeast(1), ">= 1"},
		// An empty destination: the copy fetched every NAR of the closure once.
		{"decross_store_served_bytes_total", "door=ssh", equal(closureBytes), fmt.Sprintf("%v, the closure's NAR size", closureBytes)},
		{"decross_store_errors_total", "door=ssh,op=QueryPathInfo,reason=not_served", atLeast(1), ">= 1"},
		{"decross_store_ssh_sessions_total", "", atLeast(4), ">= 4"},
		{"decross_store_ssh_connections_total", "", atLeast(4), ">= 4"},
		// A fresh cache: every served path of the closure was rewritten.
		{"decross_store_cache_misses_total", "", atLeast(2), ">= 2 (a fresh cache)"},
		{"decross_store_cache_entries", "", atLeast(2), ">= 2"},
		{"decross_store_cache_size_bytes", "", atLeast(closureBytes), fmt.Sprintf(">= %v, the closure's NAR size", closureBytes)},
		{"decross_store_rewrite_output_bytes_total", "", atLeast(closureBytes), fmt.Sprintf(">= %v, the closure's NAR size", closureBytes)},
	} {
		got, ok := metricValue(fams, c.name, c.labels)
		if !ok || !c.check(got) {
			t.Errorf("%s{%s} = %v (present: %v), want %s", c.name, c.labels, got, ok, c.want)
		}
	}
	var refused float64
	for _, mt := range fams["decross_store_errors_total"].GetMetric() {
		if strings.Contains(labels(mt), "reason=refused_write") {
			refused += mt.GetCounter().GetValue()
		}
	}
	if refused < 1 {
		t.Errorf("no refused_write error counted for nix copy --to")
	}
	for name, want := range map[string]string{
		"decross_store_rewrite_duration_seconds":          "",
		"decross_store_upstream_request_duration_seconds": "op=NarFromPath",
	} {
		var n uint64
		for _, mt := range fams[name].GetMetric() {
			if labels(mt) == want {
				n = mt.GetHistogram().GetSampleCount()
			}
		}
		if n == 0 {
			t.Errorf("%s{%s}: no observations after a cold copy", name, want)
		}
	}
	if bi := fams["decross_store_build_info"].GetMetric(); len(bi) != 1 || !strings.HasPrefix(labels(bi[0]), "version=decross-store ") {
		t.Errorf("build_info = %v, want one series with the version", bi)
	}
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

func scrapeMetrics(ctx context.Context, t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape of %s: %v", url, err)
	}
	return fams
}

func labels(m *dto.Metric) string {
	var kv []string
	for _, l := range m.GetLabel() {
		kv = append(kv, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(kv, ",")
}

// metricValue is the value of a counter or gauge series.
func metricValue(fams map[string]*dto.MetricFamily, name, want string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		if labels(m) != want {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}
