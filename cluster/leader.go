package cluster

import (
	"context"
	"sync"
	"time"
)

// EvictLease is the name of the lease an eviction pass runs under.
const EvictLease = "evict"

// Leader returns the storage.EvictOptions.Lead of a replica sharing its
// index and storage with others: a pass runs only under the lease
// EvictLease, taken for ttl by holder (the replica's name) when the pass
// starts, renewed while it runs (Lease.Keep) and released when it ends.
// The pass's context ends when the lease is lost. While another replica
// holds it, or while Redis is down, nobody here evicts: a pass is skipped.
// The release function may be called more than once.
func (r *Redis) Leader(holder string, ttl time.Duration) func(ctx context.Context) (context.Context, func(), bool) {
	return func(ctx context.Context) (context.Context, func(), bool) {
		if !r.Up() {
			return ctx, nil, false
		}
		l, _, err := r.Acquire(ctx, EvictLease, holder, ttl)
		if err != nil {
			return ctx, nil, false
		}
		lost, stop := l.Keep()
		lctx, cancel := context.WithCancel(ctx)
		done, watched := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-lost:
				cancel()
			case <-done:
			}
		}()
		var once sync.Once
		return lctx, func() {
			once.Do(func() {
				close(done)
				<-watched
				cancel()
				stop()
			})
		}, true
	}
}
