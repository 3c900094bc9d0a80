package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Lease is a Redis key held by one replica for a while: SET NX PX to
// take it, its value the holder (the replica's advertised URL) and a
// random token, renewed while the work runs and released by
// compare-and-delete, so that a replica never renews or releases a lease
// another one took after its own expired.
type Lease struct {
	r     *Redis
	key   string
	value string
	ttl   time.Duration
}

// ErrLeaseHeld reports a lease held by another replica.
var ErrLeaseHeld = errors.New("lease held by another replica")

var (
	renewScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)
	dropScript  = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
	// takeOver replaces the lease of a holder known to be gone (its value
	// unchanged since it was read) by ours.
	takeOverScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then redis.call("set", KEYS[1], ARGV[2], "PX", ARGV[3]) return 1 else return 0 end`)
)

// Acquire takes the lease name for holder for ttl. It returns
// ErrLeaseHeld (and the current holder) when another replica holds it.
func (r *Redis) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, string, error) {
	l := &Lease{r: r, key: r.Key("lease", name), value: holder + " " + token(), ttl: ttl}
	ok, err := r.c.SetNX(ctx, l.key, l.value, ttl).Result()
	if r.Observe(err) != nil {
		return nil, "", err
	}
	if ok {
		return l, holder, nil
	}
	cur, err := r.c.Get(ctx, l.key).Result()
	if errors.Is(err, redis.Nil) {
		// Released meanwhile: one more try.
		ok, err = r.c.SetNX(ctx, l.key, l.value, ttl).Result()
		if r.Observe(err) != nil {
			return nil, "", err
		}
		if ok {
			return l, holder, nil
		}
		return nil, "", ErrLeaseHeld
	}
	if r.Observe(err) != nil {
		return nil, "", err
	}
	return nil, holderOf(cur), ErrLeaseHeld
}

// TakeOver takes the lease name from gone, a holder that stopped
// answering, when the lease is still gone's (or free).
func (r *Redis) TakeOver(ctx context.Context, name, gone, holder string, ttl time.Duration) (*Lease, error) {
	key := r.Key("lease", name)
	cur, err := r.c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		l, _, err := r.Acquire(ctx, name, holder, ttl)
		return l, err
	}
	if r.Observe(err) != nil {
		return nil, err
	}
	if holderOf(cur) != gone {
		return nil, ErrLeaseHeld
	}
	l := &Lease{r: r, key: key, value: holder + " " + token(), ttl: ttl}
	n, err := takeOverScript.Run(ctx, r.c, []string{key}, cur, l.value, ttl.Milliseconds()).Int()
	if r.Observe(err) != nil {
		return nil, err
	}
	if n != 1 {
		return nil, ErrLeaseHeld
	}
	return l, nil
}

// Holder returns who holds the lease name ("" when nobody does).
func (r *Redis) Holder(ctx context.Context, name string) (string, error) {
	cur, err := r.c.Get(ctx, r.Key("lease", name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", r.Observe(nil)
	}
	if r.Observe(err) != nil {
		return "", err
	}
	return holderOf(cur), nil
}

// Renew extends the lease by its ttl; false when it is no longer ours.
func (l *Lease) Renew(ctx context.Context) (bool, error) {
	n, err := renewScript.Run(ctx, l.r.c, []string{l.key}, l.value, l.ttl.Milliseconds()).Int()
	if l.r.Observe(err) != nil {
		return false, err
	}
	return n == 1, nil
}

// Release gives the lease up if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	_, err := dropScript.Run(ctx, l.r.c, []string{l.key}, l.value).Result()
	return l.r.Observe(err)
}

// Keep renews the lease every third of its ttl until stop is called
// (which also releases it). lost is closed when a renewal finds the lease
// taken by someone else or fails for longer than the ttl.
func (l *Lease) Keep() (lost <-chan struct{}, stop func()) {
	lostc := make(chan struct{})
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
			ok, err := l.Renew(ctx)
			cancel()
			if err == nil && ok {
				last = time.Now()
				continue
			}
			if (err == nil && !ok) || time.Since(last) > l.ttl {
				close(lostc)
				<-done
				return
			}
		}
	}()
	var once sync.Once
	return lostc, func() {
		once.Do(func() {
			close(done)
			<-finished
			ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
			defer cancel()
			_ = l.Release(ctx) //nolint:errcheck // an unreleased lease expires by itself
		})
	}
}

// holderOf is the holder part of a lease value.
func holderOf(value string) string {
	h, _, _ := strings.Cut(value, " ")
	return h
}

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
