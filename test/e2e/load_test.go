//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/load"
)

// TestLoadSmoke runs the load generator of bench/run.sh --only load
// (bench/load) briefly against the binary: 50 keep-alive clients on warm
// manifests and blobs for 2 s. No request fails (status, length, digest),
// and once the clients closed their connections the proxy's goroutines and
// descriptors come back within 10 % of what they were before the run. No
// figure of speed is checked.
func TestLoadSmoke(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	res, err := load.Run(t.Context(), load.Options{
		ProxyBin: proxyBin,
		Clients:  50,
		Duration: 2 * time.Second,
		Warm:     time.Second,
		Settle:   time.Second,
		AfterMax: 30 * time.Second,
		Dir:      t.TempDir(),
		Log:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.Text())
	if res.Total.Requests == 0 {
		t.Fatal("no request was made")
	}
	if res.Total.Errors != 0 || res.WarmErrs != 0 {
		t.Errorf("%d requests failed (%d in the warm-up): %v %q", res.Total.Errors, res.WarmErrs, res.Errors, res.Samples)
	}
	if !res.Settled {
		t.Errorf("after the clients closed: %s; before: %s: goroutines or descriptors not back within 10 %%", res.After, res.Before)
	}
	if res.Peak.Goroutines <= res.Before.Goroutines {
		t.Errorf("peak goroutines %d not above before (%d): the load did not reach the proxy", res.Peak.Goroutines, res.Before.Goroutines)
	}
	for _, k := range []string{"GET blob", "HEAD blob"} {
		if n := res.Upstream[k]; n != 0 {
			t.Errorf("%d upstream %s requests during the run: the blobs were warm", n, k)
		}
	}
}
