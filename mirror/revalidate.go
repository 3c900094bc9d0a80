package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// DefaultRevalidateWait is Options.RevalidateWait's default.
const DefaultRevalidateWait = 2 * time.Second

// errStopped is the cause of a revalidation cancelled by Drain or Abandon:
// a shutdown, not an upstream failure (no outage hold starts).
var errStopped = errors.New("revalidation stopped: the mirror is shutting down")

// revalidations runs the upstream lookups of cached records (a tag's, a
// subject's referrers): one per record at a time, shared by the requests
// that arrive while it runs, on a context of its own (the first
// request's values, bounded by Options.ManifestTimeout). A request waits
// for it at most Options.RevalidateWait and is then answered from the
// cache, stale, while the lookup finishes in the background: a hanging
// upstream never holds a client longer than that. Drain and Abandon
// cancel the lookups in flight.
type revalidations struct {
	mu    sync.Mutex
	calls map[string]*revalCall // key → lookup in flight
}

// revalCall is one lookup in flight.
type revalCall struct {
	done   chan struct{} // closed when mf and err are set
	mf     *manifest
	err    error
	cancel context.CancelCauseFunc
	// late is set once a request stopped waiting for it: later requests
	// are answered stale at once until it ends.
	late atomic.Bool
}

// revalidate answers a cached record through refresh, run once for key
// among concurrent requests. A request waits for it at most
// Options.RevalidateWait (negative: as long as it takes), and gets stale()
// when it takes longer; a request whose client leaves gets clientGone.
func (m *Mirror) revalidate(ctx context.Context, key string, stale func() *manifest, refresh func(context.Context) (*manifest, error)) (*manifest, error) {
	c := m.revals.join(ctx, m.opts.ManifestTimeout, key, refresh)
	select {
	case <-c.done:
		return c.mf, c.err
	default:
	}
	if c.late.Load() {
		return stale(), nil
	}
	var budget <-chan time.Time
	if m.opts.RevalidateWait > 0 {
		timer := time.NewTimer(m.opts.RevalidateWait)
		defer timer.Stop()
		budget = timer.C
	}
	select {
	case <-c.done:
		return c.mf, c.err
	case <-ctx.Done():
		return nil, clientGone(ctx.Err())
	case <-budget:
		if !c.late.Swap(true) {
			logx.From(ctx).WithField("wait", m.opts.RevalidateWait.String()).
				Warn("upstream slow to answer a revalidation: the cached copy is answered stale while the revalidation goes on in the background")
		}
		return stale(), nil
	}
}

// join returns the lookup in flight for key, or starts refresh for it on
// a context detached from ctx, bounded by timeout.
func (g *revalidations) join(ctx context.Context, timeout time.Duration, key string, refresh func(context.Context) (*manifest, error)) *revalCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c
	}
	if g.calls == nil {
		g.calls = map[string]*revalCall{}
	}
	bctx, cancelTimeout := detached(ctx, timeout)
	bctx, cancel := context.WithCancelCause(bctx)
	c := &revalCall{done: make(chan struct{}), cancel: cancel}
	g.calls[key] = c
	go func() {
		defer cancelTimeout()
		defer cancel(nil)
		mf, err := refresh(bctx)
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		c.mf, c.err = mf, err
		close(c.done)
	}()
	return c
}

// stop cancels every lookup in flight.
func (g *revalidations) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.calls {
		c.cancel(errStopped)
	}
}

// drain waits until no lookup is left or ctx ends; with stop it cancels
// the lookups in flight, and those that start meanwhile.
func (g *revalidations) drain(ctx context.Context, stop bool) error {
	for {
		g.mu.Lock()
		var c *revalCall
		for _, c = range g.calls {
			if stop {
				c.cancel(errStopped)
			}
		}
		n := len(g.calls)
		g.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("%d revalidations still running: %w", n, ctx.Err())
		}
	}
}

// stopped reports whether ctx is a revalidation cancelled by a shutdown.
func stopped(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errStopped)
}
