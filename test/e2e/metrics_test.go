//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads the proxy's /metrics into "name{labels}" → value.
func scrape(t *testing.T, p *proxy) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "crp_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// TestMetricsAfterRealPulls: after a cold and a warm skopeo copy, the
// hit/miss counters and the byte counters have exact values.
func TestMetricsAfterRealPulls(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo")
	u := startUpstreams(t)
	p := startProxy(t, u)
	img := smallImage(t, u.Hub, "library/e2e-metrics", "v1")
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	ref := "docker.io/library/e2e-metrics:v1"
	var blobBytes int64
	for _, b := range append(img.Layers, img.Config) {
		blobBytes += b.Size
	}
	nBlobs := float64(len(img.Layers) + 1)
	key := func(name, labels string) string { return fmt.Sprintf("%s{%s}", name, labels) }

	skopeoCopy(t, conf, policy, ref, "v1")
	// The client has every verified byte before the fills commit (a
	// remote driver such as S3 takes a while): wait for them to end.
	m := scrape(t, p)
	for deadline := time.Now().Add(30 * time.Second); m["crp_fills_in_flight"] != 0 && time.Now().Before(deadline); m = scrape(t, p) {
		time.Sleep(20 * time.Millisecond)
	}
	checks := []struct {
		name string
		want float64
	}{
		{key("crp_requests_total", `cache="miss",kind="blob",upstream="docker.io"`), nBlobs},
		{key("crp_requests_total", `cache="hit",kind="blob",upstream="docker.io"`), 0},
		{key("crp_served_bytes_total", `source="upstream",upstream="docker.io"`), float64(blobBytes + int64(len(img.Manifest)))},
		{key("crp_served_bytes_total", `source="cache",upstream="docker.io"`), 0},
		{"crp_fills_in_flight", 0},
	}
	for _, c := range checks {
		if got := m[c.name]; got != c.want {
			t.Errorf("cold: %s = %v, want %v", c.name, got, c.want)
		}
	}
	if got := m[key("crp_upstream_bytes_total", `upstream="docker.io"`)]; got != float64(blobBytes+int64(len(img.Manifest))) {
		t.Errorf("cold: upstream bytes = %v, want %d", got, blobBytes+int64(len(img.Manifest)))
	}

	skopeoCopy(t, conf, policy, ref, "v1")
	m2 := scrape(t, p)
	warm := []struct {
		name string
		want float64
	}{
		{key("crp_requests_total", `cache="hit",kind="blob",upstream="docker.io"`), nBlobs},
		{key("crp_requests_total", `cache="miss",kind="blob",upstream="docker.io"`), nBlobs},
		{key("crp_served_bytes_total", `source="cache",upstream="docker.io"`), float64(blobBytes + int64(len(img.Manifest)))},
		{key("crp_upstream_bytes_total", `upstream="docker.io"`), float64(blobBytes + int64(len(img.Manifest)))},
	}
	for _, c := range warm {
		if got := m2[c.name]; got != c.want {
			t.Errorf("warm: %s = %v, want %v", c.name, got, c.want)
		}
	}
	if t.Failed() {
		for k, v := range m2 {
			if strings.HasPrefix(k, "crp_requests_total") || strings.HasPrefix(k, "crp_served") || strings.HasPrefix(k, "crp_upstream_bytes") {
				t.Logf("%s %v", k, v)
			}
		}
	}
}
