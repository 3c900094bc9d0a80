package flight

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Group runs one call per key at a time and shares its result among the
// callers that arrive while it runs. The zero value is not usable: New
// sets the timeout that bounds every call.
type Group[T any] struct {
	g       singleflight.Group
	timeout time.Duration

	mu      sync.Mutex
	waiting map[string]int // callers of Do attached to a call, by key
}

// New returns a Group whose calls run at most timeout each (a timeout <= 0
// is a programming error and panics: shared work must be bounded).
func New[T any](timeout time.Duration) *Group[T] {
	if timeout <= 0 {
		panic("flight: a group needs a positive timeout")
	}
	return &Group[T]{timeout: timeout}
}

// Timeout returns the bound of each call.
func (g *Group[T]) Timeout() time.Duration { return g.timeout }

// Do runs fn once for key among concurrent callers and returns its result
// to each of them. fn receives a context that keeps ctx's values (the
// request's logger) but not its cancellation, bounded by the group's
// timeout: the caller that started it may hang up without failing the
// others. Each caller waits on its own ctx: when ctx ends first, Do
// returns ctx.Err() at once (errors.Is(err, context.Canceled) or
// context.DeadlineExceeded) while fn goes on for the others.
func (g *Group[T]) Do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	ch := g.g.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
		defer cancel()
		return fn(fctx)
	})
	g.attach(key, 1)
	defer g.attach(key, -1)
	var zero T
	select {
	case res := <-ch:
		if res.Err != nil {
			return zero, res.Err
		}
		v, _ := res.Val.(T)
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Left reports whether err is what Do returned because the caller's own
// context ended while it waited (not an error of the shared work).
func Left(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// Waiting returns how many callers of Do are attached to the call of key
// now: each was counted once DoChan had joined it to the call, so when it
// reaches n, n callers share one call (tests make sure concurrent requests
// overlap before the shared work ends, without timing).
func (g *Group[T]) Waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[key]
}

func (g *Group[T]) attach(key string, delta int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting == nil {
		g.waiting = map[string]int{}
	}
	if g.waiting[key] += delta; g.waiting[key] <= 0 {
		delete(g.waiting, key)
	}
}
