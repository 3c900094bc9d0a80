package upstream

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// recordObserver records what a Registry reports.
type recordObserver struct {
	mu       sync.Mutex
	statuses []string
	limits   [][2]int64
}

func (o *recordObserver) UpstreamRequest(upstream, status string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.statuses = append(o.statuses, upstream+" "+status)
}

func (o *recordObserver) RateLimit(_ string, limit, remaining int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.limits = append(o.limits, [2]int64{limit, remaining})
}

func TestParseRateLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		n        int64
		window   time.Duration
		ok       bool
	}{
		{"docker hub", "100;w=21600", 100, 6 * time.Hour, true},
		{"spaces", " 7 ; w=60 ", 7, time.Minute, true},
		{"no window", "42", 42, 0, true},
		{"other params", "5;w=3600;comment=x", 5, time.Hour, true},
		{"empty", "", 0, 0, false},
		{"not a number", "lots;w=60", 0, 0, false},
		{"negative", "-1", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, w, ok := ParseRateLimit(tt.in)
			if n != tt.n || w != tt.window || ok != tt.ok {
				t.Fatalf("ParseRateLimit(%q) = %d, %v, %v; want %d, %v, %v", tt.in, n, w, ok, tt.n, tt.window, tt.ok)
			}
		})
	}
}

func TestObserverSeesEveryRequestAndRateLimit(t *testing.T) {
	t.Parallel()
	obs := &recordObserver{}
	now := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	fails := 1
	r, srv := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && fails > 0 {
			fails--
			w.WriteHeader(http.StatusServiceUnavailable) // retried
			return
		}
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "9;w=21600")
		w.Header().Set("Docker-Content-Digest", testDigest.String())
		w.WriteHeader(http.StatusOK)
	}, Options{Observer: obs, Now: func() time.Time { return now }})

	if _, _, _, ok := r.RateRemaining(); ok {
		t.Fatal("RateRemaining before any answer: ok")
	}
	if _, _, err := r.Manifest(t.Context(), "team/app", "v1", true); err != nil {
		t.Fatal(err)
	}
	body, _, err := r.Blob(t.Context(), "team/app", testDigest)
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	srv.Close()
	if _, err := r.StatBlob(t.Context(), "team/app", digest.FromString("gone")); err == nil {
		t.Fatal("StatBlob on a closed server succeeded")
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []string{"registry.test:25443 200", "registry.test:25443 503", "registry.test:25443 200"}
	// The closed server: one failed attempt plus the retries, each "error".
	for range len(r.retry.backoff) + 1 {
		want = append(want, "registry.test:25443 error")
	}
	if len(obs.statuses) != len(want) {
		t.Fatalf("requests observed %q, want %q", obs.statuses, want)
	}
	for i := range want {
		if obs.statuses[i] != want[i] {
			t.Fatalf("requests observed %q, want %q", obs.statuses, want)
		}
	}
	if len(obs.limits) != 2 || obs.limits[0] != [2]int64{100, 9} {
		t.Fatalf("rate limits observed %v", obs.limits)
	}
	rem, window, seen, ok := r.RateRemaining()
	if !ok || rem != 9 || window != 6*time.Hour || !seen.Equal(now) {
		t.Fatalf("RateRemaining() = %d, %v, %v, %v", rem, window, seen, ok)
	}
}

func TestRateRemainingDefaults(t *testing.T) {
	t.Parallel()
	r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Ratelimit-Remaining", "3")
		w.WriteHeader(http.StatusTooManyRequests)
	}, Options{})
	_, _, err := r.Manifest(t.Context(), "team/app", "v1", true)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("429: err %v", err)
	}
	if rem, window, _, ok := r.RateRemaining(); !ok || rem != 3 || window != DefaultRateWindow {
		t.Fatalf("RateRemaining() = %d, %v, %v", rem, window, ok)
	}
}
