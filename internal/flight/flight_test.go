package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLeaderHangsUp: the caller that started the work leaves; the work
// goes on and the others get its result; it ran once. (synctest: the
// waiters are known to be waiting before the leader leaves.)
func TestLeaderHangsUp(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := New[string](time.Minute)
		release := make(chan struct{})
		var runs atomic.Int32
		fn := func(ctx context.Context) (string, error) {
			runs.Add(1)
			select {
			case <-release:
				return "token", ctx.Err()
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		leaderCtx, leave := context.WithCancel(t.Context())
		leaderErr := make(chan error, 1)
		go func() {
			_, err := g.Do(leaderCtx, "k", fn)
			leaderErr <- err
		}()
		var wg sync.WaitGroup
		results := make([]string, 4)
		errs := make([]error, 4)
		for i := range 4 {
			wg.Go(func() { results[i], errs[i] = g.Do(t.Context(), "k", fn) })
		}
		synctest.Wait() // the work runs, the leader and the waiters wait
		leave()
		if err := <-leaderErr; !errors.Is(err, context.Canceled) || !Left(leaderCtx, err) {
			t.Fatalf("the leader that hung up got %v, want context.Canceled at once", err)
		}
		close(release)
		wg.Wait()
		for i := range 4 {
			if errs[i] != nil || results[i] != "token" {
				t.Fatalf("waiter %d: %q, %v; want the shared result", i, results[i], errs[i])
			}
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("the work ran %d times, want once", n)
		}
	})
}

// TestWaiterHangsUp: a waiter whose context ends leaves at once, while the
// work is still running for the others.
func TestWaiterHangsUp(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := New[int](time.Minute)
		release := make(chan struct{})
		var runs atomic.Int32
		fn := func(ctx context.Context) (int, error) {
			runs.Add(1)
			<-release
			return 42, nil
		}
		done := make(chan error, 1)
		go func() {
			v, err := g.Do(t.Context(), "k", fn)
			if err == nil && v != 42 {
				err = errors.New("wrong value")
			}
			done <- err
		}()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		if _, err := g.Do(ctx, "k", fn); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a waiter whose deadline passed got %v, want context.DeadlineExceeded", err)
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("the waiter started the work again (%d runs)", n)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("the leader: %v", err)
		}
	})
}

// TestBoundedAndDetached: the work's context keeps the caller's values,
// not its cancellation, and ends at the group's timeout.
func TestBoundedAndDetached(t *testing.T) {
	t.Parallel()
	type key struct{}
	g := New[string](20 * time.Millisecond)
	ctx := context.WithValue(t.Context(), key{}, "request-logger")
	v, err := g.Do(ctx, "k", func(fctx context.Context) (string, error) {
		if _, ok := fctx.Deadline(); !ok {
			return "", errors.New("no deadline")
		}
		<-fctx.Done()
		return fctx.Value(key{}).(string), nil
	})
	if err != nil || v != "request-logger" {
		t.Fatalf("got %q, %v", v, err)
	}
}

// TestErrorsShared: an error of the work reaches every waiter, and the
// next call after it runs again.
func TestErrorsShared(t *testing.T) {
	t.Parallel()
	g := New[int](time.Minute)
	boom := errors.New("upstream refused")
	if _, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if v, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Fatalf("the next call did not run afresh: %v %v", v, err)
	}
}

func TestNewNeedsTimeout(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("New(0) did not panic")
		}
	}()
	New[int](0)
}

// TestWaiting: Waiting counts the callers attached to a call, and drops
// to zero once they have their result.
func TestWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := New[int](time.Minute)
		release := make(chan struct{})
		var runs atomic.Int32
		fn := func(context.Context) (int, error) {
			runs.Add(1)
			<-release
			return 1, nil
		}
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() { _, _ = g.Do(t.Context(), "k", fn) })
		}
		synctest.Wait()
		if n := g.Waiting("k"); n != 5 {
			t.Fatalf("Waiting = %d, want 5 callers on one call", n)
		}
		if n := g.Waiting("other"); n != 0 {
			t.Fatalf("Waiting(other) = %d", n)
		}
		close(release)
		wg.Wait()
		if n, r := g.Waiting("k"), runs.Load(); n != 0 || r != 1 {
			t.Fatalf("after the call: Waiting = %d, runs = %d; want 0 and 1", n, r)
		}
	})
}
