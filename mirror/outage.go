package mirror

import (
	"context"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// outageGate remembers, per upstream, until when it is left alone after a
// tag revalidation failed with a temporary error: cached tags are
// answered stale at once instead of each pull waiting for the retries (or
// a hanging upstream's timeout) first. Misses still ask upstream, having
// nothing else to answer with, and the first pull after the hold probes
// it again. The memory is per process: each replica learns on its own.
type outageGate struct {
	mu    sync.Mutex
	until map[string]time.Time // upstream host → end of the hold
}

// upstreamHeld reports whether host's cached tags are to be answered
// stale without asking it.
func (m *Mirror) upstreamHeld(host string) bool {
	g := &m.outages
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.until[host]
	return ok && m.opts.Now().Before(until)
}

// markDown starts (or extends) host's hold after cause, logging when a
// hold starts.
func (m *Mirror) markDown(ctx context.Context, host string, cause error) {
	if m.opts.DownHold < 0 {
		return
	}
	now := m.opts.Now()
	g := &m.outages
	g.mu.Lock()
	if g.until == nil {
		g.until = map[string]time.Time{}
	}
	_, was := g.until[host]
	g.until[host] = now.Add(m.opts.DownHold)
	g.mu.Unlock()
	if !was {
		logx.From(ctx).WithError(cause).WithFields(map[string]any{logx.FieldUpstream: host, "hold": m.opts.DownHold.String()}).
			Warn("upstream unavailable: its cached tags are answered stale without asking it, and it is probed again after each hold, until it answers")
	}
}

// markUp ends host's hold after an answer from it, logging when one ends.
func (m *Mirror) markUp(ctx context.Context, host string) {
	g := &m.outages
	g.mu.Lock()
	_, was := g.until[host]
	delete(g.until, host)
	g.mu.Unlock()
	if was {
		logx.From(ctx).WithField(logx.FieldUpstream, host).Info("upstream answers again: cached tags are revalidated as usual")
	}
}
