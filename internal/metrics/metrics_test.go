package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// family returns the gathered family of name, or nil.
func family(t *testing.T, m *Metrics, name string) []map[string]any {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			row := map[string]any{}
			for _, l := range s.GetLabel() {
				row[l.GetName()] = l.GetValue()
			}
			switch {
			case s.Counter != nil:
				row["value"] = s.Counter.GetValue()
			case s.Gauge != nil:
				row["value"] = s.Gauge.GetValue()
			case s.Histogram != nil:
				row["value"] = float64(s.Histogram.GetSampleCount())
				row["buckets"] = len(s.Histogram.GetBucket())
			}
			out = append(out, row)
		}
	}
	return out
}

func TestAnsweredCountsRequestsAndBytesBySource(t *testing.T) {
	t.Parallel()
	m := New(Options{})
	m.Answered("docker.io", KindTag, "MISS", 100)
	m.Answered("docker.io", KindBlob, "hit", 1000)
	m.Answered("docker.io", KindBlob, "hit", 0) // a HEAD
	m.Answered("docker.io", KindTag, "stale", 100)
	m.Answered("docker.io", KindTag, "revalidated", 100)
	m.Answered("quay.io", KindBlob, "pass", 50)
	m.Fetched("docker.io", 100)
	m.Fetched("docker.io", 0)

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"tag miss", m.requests.WithLabelValues("docker.io", "tag", "miss"), 1},
		{"blob hit", m.requests.WithLabelValues("docker.io", "blob", "hit"), 2},
		{"tag stale", m.requests.WithLabelValues("docker.io", "tag", "stale"), 1},
		{"from cache", m.served.WithLabelValues("docker.io", SourceCache), 1200},
		{"from upstream", m.served.WithLabelValues("docker.io", SourceUpstream), 100},
		{"pass is upstream", m.served.WithLabelValues("quay.io", SourceUpstream), 50},
		{"fetched", m.upstreamBytes.WithLabelValues("docker.io"), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := testutil.ToFloat64(tt.c); got != tt.want {
				t.Fatalf("= %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSource(t *testing.T) {
	t.Parallel()
	for cache, want := range map[string]string{
		"hit": SourceCache, "HIT": SourceCache, "stale": SourceCache, "revalidated": SourceCache,
		"miss": SourceUpstream, "pass": SourceUpstream,
	} {
		if got := Source(cache); got != want {
			t.Errorf("Source(%q) = %q, want %q", cache, got, want)
		}
	}
}

func TestAddUpstreamCreatesZeroSeries(t *testing.T) {
	t.Parallel()
	m := New(Options{})
	m.AddUpstream("registry.local:5000")
	if n := len(family(t, m, NameRequests)); n != len(kinds)*len(cacheStatuses) {
		t.Fatalf("%d request series, want %d", n, len(kinds)*len(cacheStatuses))
	}
	for _, name := range []string{NameServedBytes, NameUpstreamBytes, NameFillDuration, NameDigestMismatches, NameRateLimitPostponed, NameUpstreamThrottled} {
		rows := family(t, m, name)
		if len(rows) == 0 {
			t.Errorf("%s: no series", name)
		}
		for _, r := range rows {
			if r["value"] != 0.0 || r["upstream"] != "registry.local:5000" {
				t.Errorf("%s: %v", name, r)
			}
		}
	}
	if n := len(family(t, m, NameConnects)); n != 5 {
		t.Errorf("%d connect series, want 5", n)
	}
}

func TestFillsRateLimitsEvictionsTunnels(t *testing.T) {
	t.Parallel()
	m := New(Options{})
	m.FillStarted("docker.io")
	m.FillStarted("docker.io")
	m.FillEnded("docker.io", 300*time.Millisecond)
	m.DigestMismatch("docker.io")
	m.Postponed("docker.io")
	m.Throttled("docker.io")
	m.Throttled("docker.io")
	m.UpstreamRequest("docker.io", "200")
	m.UpstreamRequest("docker.io", "200")
	m.UpstreamRequest("docker.io", "error")
	m.RateLimit("docker.io", 100, 42)
	m.RateLimit("docker.io", -1, 41) // no ratelimit-limit this time
	m.Evicted("size", 10)
	m.Evicted("manifest", 5)
	m.Connect("tunnel")
	m.TunnelOpened()
	m.TunnelOpened()
	m.TunnelClosed()

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"fills in flight", m.fillsInFlight, 1},
		{"mismatches", m.digestMismatches.WithLabelValues("docker.io"), 1},
		{"postponed", m.postponed.WithLabelValues("docker.io"), 1},
		{"throttled", m.throttled.WithLabelValues("docker.io"), 2},
		{"upstream 200", m.upstreamRequests.WithLabelValues("docker.io", "200"), 2},
		{"upstream error", m.upstreamRequests.WithLabelValues("docker.io", "error"), 1},
		{"limit kept", m.rateLimit.WithLabelValues("docker.io"), 100},
		{"remaining", m.rateRemaining.WithLabelValues("docker.io"), 41},
		{"evicted size", m.evictions.WithLabelValues("size"), 1},
		{"evicted bytes", m.evictedBytes, 15},
		{"tunnel decisions", m.connects.WithLabelValues("tunnel"), 1},
		{"tunnels open", m.tunnelsOpen, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := testutil.ToFloat64(tt.c); got != tt.want {
				t.Fatalf("= %v, want %v", got, tt.want)
			}
		})
	}
	rows := family(t, m, NameFillDuration)
	if len(rows) != 1 || rows[0]["value"] != 1.0 || rows[0]["buckets"] != 14 {
		t.Fatalf("fill duration: %v", rows)
	}
	if b := fillBuckets(); b[0] != 0.05 || b[len(b)-1] < 400 || b[len(b)-1] > 410 {
		t.Fatalf("fill buckets %v", b)
	}
}

func TestScrapeTimeSources(t *testing.T) {
	t.Parallel()
	var tokens atomic.Int64
	m := New(Options{TokenRequests: tokens.Load})
	tokens.Store(7)
	if rows := family(t, m, NameCacheBytes); len(rows) != 1 || rows[0]["value"] != 0.0 {
		t.Fatalf("cache bytes before SetCacheUsage: %v", rows)
	}
	calls := 0
	m.SetCacheUsage(func() (int64, int64) { calls++; return 12345, 6 })
	if rows := family(t, m, NameCacheBytes); len(rows) != 1 || rows[0]["value"] != 12345.0 {
		t.Fatalf("cache bytes: %v", rows)
	}
	if calls != 1 {
		t.Fatalf("usage read %d times for one scrape of both gauges, want 1", calls)
	}
	if rows := family(t, m, NameCacheObjects); rows[0]["value"] != 6.0 {
		t.Fatalf("cache objects: %v", rows)
	}
	if rows := family(t, m, NameTokenRequests); rows[0]["value"] != 7.0 {
		t.Fatalf("token requests: %v", rows)
	}
}

func TestHandlerServesOwnRegistryOnly(t *testing.T) {
	t.Parallel()
	a, b := New(Options{}), New(Options{}) // no clash: nothing global
	a.AddUpstream("docker.io")
	a.Answered("docker.io", KindBlob, "hit", 3)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`crp_requests_total{cache="hit",kind="blob",upstream="docker.io"} 1`,
		`crp_served_bytes_total{source="cache",upstream="docker.io"} 3`,
		"crp_fills_in_flight 0", "crp_cache_bytes 0", "crp_token_requests_total 0", "crp_tunnels_open 0",
		"# TYPE crp_fill_duration_seconds histogram", "go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if n := testutil.ToFloat64(b.requests.WithLabelValues("docker.io", "blob", "hit")); n != 0 {
		t.Fatalf("second registry shares counts: %v", n)
	}
	mfs, _ := prometheus.DefaultGatherer.Gather()
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "crp_") {
			t.Fatalf("%s registered on the global registry", mf.GetName())
		}
	}
	problems, err := testutil.GatherAndLint(a.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "crp_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}
