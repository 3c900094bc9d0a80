package status

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestStatusPage(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crp_requests_total"}, []string{"upstream", "kind", "cache"})
	served := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crp_served_bytes_total"}, []string{"upstream", "source"})
	fetched := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crp_upstream_bytes_total"}, []string{"upstream"})
	remaining := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "crp_ratelimit_remaining"}, []string{"upstream"})
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "crp_ratelimit_limit"}, []string{"upstream"})
	reg.MustRegister(req, served, fetched, remaining, limit)
	req.WithLabelValues("docker.io", "blob", "hit").Add(3)
	req.WithLabelValues("docker.io", "blob", "miss").Add(1)
	served.WithLabelValues("docker.io", "cache").Add(3 << 20)
	served.WithLabelValues("docker.io", "upstream").Add(1 << 20)
	fetched.WithLabelValues("docker.io").Add(1 << 20)
	remaining.WithLabelValues("docker.io").Set(12)
	limit.WithLabelValues("docker.io").Set(100)

	p := New(Source{
		Gatherer: reg,
		Fills: func() []Fill {
			return []Fill{{Digest: "sha256:0123456789abcdef0123", Upstream: "quay.io", Repo: "org/app", Written: 50 << 20, Size: 100 << 20, Clients: 3, Started: time.Now().Add(-5 * time.Second),
				Source: "http://10.0.0.7:3128"}}
		},
		Members:    func() []string { return []string{"http://10.0.0.5:3128", "http://10.0.0.7:3128"} },
		Self:       "http://10.0.0.5:3128",
		Usage:      func(context.Context) (int64, int64, error) { return 8 << 30, 42, nil },
		MaxSize:    32 << 30,
		Registries: []Registry{{Host: "registry.local:5000", Namespace: "registry.local_5000"}},
		DockerHub:  true,
		Version:    "test",
		Banner:     "container-registry-proxy test\n",
	})
	mirror := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logx.InfoFrom(r.Context()).SetRoute("docker.io", "library/alpine", "3.20")
	})
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	tracked := logx.AccessLog(quiet, p.Track(mirror))
	for range 2 {
		tracked.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/library/alpine/manifests/3.20", nil))
	}
	get := func(accept string) (string, string) {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "http://proxy.example:3128/", nil)
		r.Host = "proxy.example:3128"
		r.Header.Set("Accept", accept)
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Result().Header.Get("Content-Type"), string(b)
	}
	if ct, body := get("*/*"); !strings.HasPrefix(ct, "text/plain") || body != "container-registry-proxy test\n" {
		t.Fatalf("non-browser: %q %q", ct, body)
	}
	ct, raw := get("text/html,application/xhtml+xml")
	body := html.UnescapeString(raw)
	if !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("browser: %q", ct)
	}
	for _, want := range []string{
		`id="hit-ratio">75%`, `id="hits">3</span>`, `id="requests">4</span>`,
		`id="bytes-saved">3.0 MiB`, `id="cache-usage">8.0 GiB`, "25% of CACHE_MAX_SIZE 32.0 GiB",
		"docker.io/library/alpine</td><td class=\"n\">2</td>",
		`class="low">12 / 100`, "50.0 MiB / 100.0 MiB (50%)", "quay.io/org/app",
		"quay.io/org/app</td><td>http://10.0.0.7:3128</td>",
		`<td><code>http://10.0.0.5:3128</code></td><td>this one</td>`, `<td><code>http://10.0.0.7:3128</code></td><td></td>`,
		`location = "proxy.example:3128/registry.local_5000"`, `location = "proxy.example:3128/docker.io"`,
		`http://proxy.example:3128/setup/systemd`, `"registry-mirrors": ["http://proxy.example:3128"]`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "http://fonts", "https://"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q: it must make no outside request", bad)
		}
	}
}

// failingCollector is a metrics source that cannot be read.
type failingCollector struct{ desc *prometheus.Desc }

func (c failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.desc, errors.New("source gone"))
}

// TestStatusPageWithFailingSources: when the cache index or a metric
// cannot be read, the page still renders what it has, shows the cache
// usage as unknown (not as an empty cache) and the operator finds why in
// the log.
func TestStatusPageWithFailingSources(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crp_requests_total"}, []string{"upstream", "kind", "cache"})
	reg.MustRegister(req, failingCollector{prometheus.NewDesc("crp_broken", "a metric that fails", nil, nil)})
	req.WithLabelValues("quay.io", "blob", "hit").Add(2)
	p := New(Source{
		Gatherer: reg,
		Usage:    func(context.Context) (int64, int64, error) { return 0, 0, errors.New("index closed") },
		MaxSize:  32 << 30,
		Version:  "test",
	})
	logger, hook := logtest.NewNullLogger()
	r := httptest.NewRequestWithContext(logx.WithEntry(t.Context(), logrus.NewEntry(logger)), http.MethodGet, "http://proxy.example:3128/", nil)
	r.Header.Set("Accept", "text/html")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	res := w.Result()
	body, _ := io.ReadAll(res.Body)
	page := html.UnescapeString(string(body))
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, Content-Type %q; want the page", res.StatusCode, res.Header.Get("Content-Type"))
	}
	for _, want := range []string{`id="cache-usage">unknown`, "the cache index did not answer", `id="hits">2</span>`, "<td>quay.io</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, `id="cache-usage">0 B`) {
		t.Error("page shows an empty cache for a usage it could not read")
	}
	var logged []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			logged = append(logged, fmt.Sprint(e.Data[logrus.ErrorKey]))
		}
	}
	if got := strings.Join(logged, "; "); !strings.Contains(got, "index closed") || !strings.Contains(got, "source gone") {
		t.Errorf("warnings logged: %q; want the usage's and the metric's errors", got)
	}
}

// TestTrackCountsOnlyServedManifests: manifest requests refused or unknown
// upstream (401, 404) are not pulls: anyone could plant repository names
// on the page with them.
func TestTrackCountsOnlyServedManifests(t *testing.T) {
	t.Parallel()
	p := New(Source{})
	mirror := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo := strings.TrimPrefix(strings.Split(r.URL.Path, "/manifests/")[0], "/v2/")
		logx.InfoFrom(r.Context()).SetRoute("docker.io", repo, "v1")
		switch repo {
		case "planted/name":
			w.WriteHeader(http.StatusNotFound)
		case "private/name":
			w.WriteHeader(http.StatusUnauthorized)
		default:
			_, _ = w.Write([]byte("{}"))
		}
	})
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	tracked := logx.AccessLog(quiet, p.Track(mirror))
	for _, repo := range []string{"library/app", "planted/name", "private/name", "library/app"} {
		tracked.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/v1", nil))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pulls) != 1 || p.pulls["docker.io/library/app"] != 2 {
		t.Fatalf("pulls %v, want only docker.io/library/app twice", p.pulls)
	}
}
