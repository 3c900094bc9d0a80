package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	dto "github.com/prometheus/client_model/go"
)

// metricValue returns the value of the series of name whose labels
// include want, summed over the series that match (0 when none).
func metricValue(t *testing.T, mt *metrics.Metrics, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := mt.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// oneConnClient sends every request on one keep-alive connection: the
// server reads a request only after the handler of the one before it has
// returned, so metrics scraped on it include every earlier answer.
func oneConnClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 30 * time.Second}
}

type metricCase struct {
	name   string
	labels map[string]string
	want   float64
}

func checkMetrics(t *testing.T, mt *metrics.Metrics, cases []metricCase) {
	t.Helper()
	for _, c := range cases {
		if got := metricValue(t, mt, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestMetricsAfterColdAndWarmPull(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 150_000), testreg.RandomLayer(t, 7_000))
	_, port, _ := net.SplitHostPort(reg.Host)
	host := "registry.test:" + port
	addr, logs, a, _ := runProxyIn(t, t.TempDir(), fmt.Sprintf(`
dockerHub: false
registries:
  - host: %s
    endpoint: %s
    caFile: %s
`, host, reg.URL, reg.CAFile))
	c := oneConnClient()
	base := "http://" + addr + "/v2/registry.test_" + port + "/team/app"
	get := func(url, wantCache string, hdr ...string) []byte {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || (wantCache != "" && resp.Header.Get("X-Cache") != wantCache) {
			t.Fatalf("GET %s: %d X-Cache %q, want %s (%v)\n%s", url, resp.StatusCode, resp.Header.Get("X-Cache"), wantCache, err, logs.String())
		}
		return body
	}
	blobs := append([]testreg.Blob{img.Config}, img.Layers...)
	var blobBytes float64
	for _, b := range blobs {
		blobBytes += float64(len(b.Bytes))
	}
	image := float64(len(img.Manifest)) + blobBytes
	pull := func(tagCache, blobCache string) {
		t.Helper()
		get(base+"/manifests/v1", tagCache, "Accept", img.MediaType)
		for _, b := range blobs {
			get(base+"/blobs/"+b.Digest.String(), blobCache)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := a.mirror.Drain(ctx); err != nil { // fills end after their answers
			t.Fatal(err)
		}
		// On the same connection: every answer above has been counted.
		if text := get("http://"+addr+"/metrics", ""); !strings.Contains(string(text), "crp_requests_total{") {
			t.Fatalf("/metrics on the main listener:\n%s", text)
		}
	}
	up := map[string]string{"upstream": host}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"upstream": host}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	pull("MISS", "MISS")
	checkMetrics(t, a.metrics, []metricCase{
		{metrics.NameRequests, with("kind", "tag", "cache", "miss"), 1},
		{metrics.NameRequests, with("kind", "blob", "cache", "miss"), 3},
		{metrics.NameRequests, up, 4},
		{metrics.NameServedBytes, with("source", "upstream"), image},
		{metrics.NameServedBytes, with("source", "cache"), 0},
		{metrics.NameUpstreamBytes, up, image},
		{metrics.NameUpstreamRequests, with("status", "200"), 4},
		{metrics.NameUpstreamRequests, up, 4},
		{metrics.NameFillsInFlight, nil, 0},
		{metrics.NameFillDuration, up, 3},
		{metrics.NameDigestMismatches, up, 0},
		{metrics.NameTokenRequests, nil, 0},
		{metrics.NameCacheObjects, nil, 4},
		{metrics.NameCacheBytes, nil, image},
	})
	if n := len(reg.Requests()); n != 4 {
		t.Fatalf("upstream saw %d requests, want 4", n)
	}

	pull("REVALIDATED", "HIT")
	checkMetrics(t, a.metrics, []metricCase{
		{metrics.NameRequests, with("kind", "tag", "cache", "miss"), 1},
		{metrics.NameRequests, with("kind", "tag", "cache", "revalidated"), 1},
		{metrics.NameRequests, with("kind", "blob", "cache", "miss"), 3},
		{metrics.NameRequests, with("kind", "blob", "cache", "hit"), 3},
		{metrics.NameRequests, up, 8},
		{metrics.NameServedBytes, with("source", "upstream"), image},
		{metrics.NameServedBytes, with("source", "cache"), image},
		{metrics.NameUpstreamBytes, up, image},
		{metrics.NameUpstreamRequests, with("status", "200"), 5}, // and the tag's HEAD
		{metrics.NameUpstreamRequests, up, 5},
		{metrics.NameFillsInFlight, nil, 0},
		{metrics.NameFillDuration, up, 3},
		{metrics.NameCacheObjects, nil, 4},
		{metrics.NameCacheBytes, nil, image},
		{metrics.NameRateLimitPostponed, up, 0},
	})
	if n := len(reg.Requests()); n != 5 {
		t.Fatalf("upstream saw %d requests, want 5", n)
	}
}

func TestMetricsRateLimitPostponesRevalidation(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	remaining := "5;w=21600"
	reg := testreg.Start(t, testreg.Options{Headers: func() http.Header {
		mu.Lock()
		defer mu.Unlock()
		return http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {remaining}}
	}})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1_000))
	reg.PushImage(t, "team/app", "v2", testreg.RandomLayer(t, 1_000))
	_, port, _ := net.SplitHostPort(reg.Host)
	host := "registry.test:" + port
	addr, logs, a, _ := runProxyIn(t, t.TempDir(), fmt.Sprintf(`
dockerHub: false
metricsListen: 127.0.0.1:0
registries:
  - host: %s
    endpoint: %s
`, host, reg.URL))
	c := oneConnClient()
	base := "http://" + addr + "/v2/registry.test_" + port + "/team/app/manifests/"
	get := func(tag string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+tag, nil)
		req.Header.Set("Accept", img.MediaType)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", tag, resp.StatusCode)
		}
		return resp
	}
	if got := get("v1").Header.Get("X-Cache"); got != "MISS" {
		t.Fatalf("cold: %s", got)
	}
	before := len(reg.Requests())
	for range 2 {
		resp := get("v1")
		if resp.Header.Get("X-Cache") != "STALE" || !strings.HasPrefix(resp.Header.Get("Warning"), `299 - "Response is stale: `) {
			t.Fatalf("low rate limit: X-Cache %q, Warning %q", resp.Header.Get("X-Cache"), resp.Header.Get("Warning"))
		}
	}
	if n := len(reg.Requests()) - before; n != 0 {
		t.Fatalf("postponed revalidations made %d upstream requests", n)
	}
	if got := get("v2").Header.Get("X-Cache"); got != "MISS" { // a miss still goes upstream
		t.Fatalf("miss under a low rate limit: %s", got)
	}
	if n := len(reg.Requests()) - before; n != 1 {
		t.Fatalf("the miss made %d upstream requests, want 1", n)
	}
	if n := strings.Count(logs.String(), "rate limit nearly used up"); n != 1 {
		t.Fatalf("rate-limit warning logged %d times, want once per window", n)
	}

	// The numbers, from the separate metrics listener.
	m := regexp.MustCompile(`serving /metrics on the metrics listener.* listen="?([0-9.:]+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no metrics listener in the log:\n%s", logs.String())
	}
	resp, err := c.Get("http://" + addr + "/metrics") // after every answer above
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`crp_ratelimit_limit{upstream=%q} 100`, host),
		fmt.Sprintf(`crp_ratelimit_remaining{upstream=%q} 5`, host),
		fmt.Sprintf(`crp_ratelimit_postponed_total{upstream=%q} 2`, host),
		fmt.Sprintf(`crp_requests_total{cache="stale",kind="tag",upstream=%q} 2`, host),
		fmt.Sprintf(`crp_requests_total{cache="miss",kind="tag",upstream=%q} 2`, host),
		"go_goroutines ", "process_open_fds ",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics listener lacks %q", want)
		}
	}
	if r, err := http.Get("http://" + m[1] + "/v2/"); err != nil || r.StatusCode != http.StatusNotFound {
		t.Errorf("metrics listener serves /v2/: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	checkMetrics(t, a.metrics, []metricCase{{metrics.NameRateLimitPostponed, map[string]string{"upstream": host}, 2}})
}
