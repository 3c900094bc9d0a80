package mirror

import (
	"context"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// RateLimited is implemented by Upstreams that read Docker Hub-style
// rate-limit headers (upstream.Registry does). The mirror postpones tag
// revalidation for such an upstream while its remaining requests are below
// Options.RateLimitMinRemaining.
type RateLimited interface {
	// RateRemaining returns the last ratelimit-remaining count upstream
	// sent, the window it applies to and when it was seen (on the
	// Options.Now clock); ok is false before any.
	RateRemaining() (remaining int64, window time.Duration, seen time.Time, ok bool)
}

// rateGate keeps, per upstream, the window during which tag revalidation
// is postponed: it opens when a remaining count below the threshold is
// seen and lasts the header's window from that moment. A low count seen
// after the window ended opens a new one; a count at or above the
// threshold (a miss still asks upstream) ends it early.
type rateGate struct {
	mu      sync.Mutex
	windows map[string]rateWindow // upstream host → current window
}

type rateWindow struct{ start, end time.Time }

// postponeRevalidation reports whether a cached tag of reg is to be
// answered stale without asking upstream, and logs the first postponement
// of each window.
func (m *Mirror) postponeRevalidation(ctx context.Context, reg *Registry) bool {
	threshold := m.opts.RateLimitMinRemaining
	rl, ok := reg.Client.(RateLimited)
	if threshold <= 0 || !ok {
		return false
	}
	remaining, window, seen, ok := rl.RateRemaining()
	if !ok || remaining >= threshold {
		return false
	}
	now := m.opts.Now()
	g := &m.rates
	g.mu.Lock()
	if g.windows == nil {
		g.windows = map[string]rateWindow{}
	}
	w, has := g.windows[reg.Host]
	opened := false
	if !has || seen.After(w.end) {
		// A low count seen since the last window ended: a new window.
		if !now.Before(seen.Add(window)) {
			g.mu.Unlock()
			return false // seen so long ago that its window is over
		}
		w = rateWindow{start: seen, end: seen.Add(window)}
		g.windows[reg.Host] = w
		opened = true
	}
	g.mu.Unlock()
	if opened {
		logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: reg.Host, "remaining": remaining, "min_remaining": threshold, "until": w.end.UTC().Format(time.RFC3339)}).
			Warn("upstream rate limit nearly used up: tag revalidation postponed, cached tags are answered stale until the window resets (logged once per window)")
	}
	return now.Before(w.end)
}
