package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

const leaseTTL = time.Minute

func mustAcquire(t *testing.T, r *Redis, name, holder string, ttl time.Duration) *Lease {
	t.Helper()
	l, got, err := r.Acquire(t.Context(), name, holder, ttl)
	if err != nil || got != holder {
		t.Fatalf("Acquire(%s) by %s = %q, %v", name, holder, got, err)
	}
	return l
}

func mustHolder(t *testing.T, r *Redis, name, want string) {
	t.Helper()
	if got, err := r.Holder(t.Context(), name); err != nil || got != want {
		t.Fatalf("Holder(%s) = %q, %v; want %q", name, got, err, want)
	}
}

// expire makes the lease name vanish as if its ttl had run out.
func expire(t *testing.T, r *Redis, name string) {
	t.Helper()
	if err := r.Client().Del(t.Context(), r.Key("lease", name)).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseAcquireRenewRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	prefix := uniquePrefix()
	ra, rb := testRedis(t, srv.Addr, prefix, nil), testRedis(t, srv.Addr, prefix, nil)

	a := mustAcquire(t, ra, "job", "http://a", leaseTTL)
	mustHolder(t, rb, "job", "http://a")
	if _, holder, err := rb.Acquire(ctx, "job", "http://b", leaseTTL); !errors.Is(err, ErrLeaseHeld) || holder != "http://a" {
		t.Fatalf("Acquire of a held lease = %q, %v; want http://a, ErrLeaseHeld", holder, err)
	}
	if ok, err := a.Renew(ctx); !ok || err != nil {
		t.Fatalf("Renew by the holder = %v, %v", ok, err)
	}
	if ttl := ra.Client().PTTL(ctx, ra.Key("lease", "job")).Val(); ttl <= 0 || ttl > leaseTTL {
		t.Fatalf("PTTL after Renew = %v", ttl)
	}

	// a's lease expires and b takes it: a can neither renew nor release
	// b's lease.
	expire(t, ra, "job")
	b := mustAcquire(t, rb, "job", "http://b", leaseTTL)
	if ok, err := a.Renew(ctx); ok || err != nil {
		t.Fatalf("Renew of a lease taken by another = %v, %v", ok, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustHolder(t, ra, "job", "http://b")
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustHolder(t, ra, "job", "")
	mustAcquire(t, ra, "job", "http://a", leaseTTL)
}

func TestLeaseTakeOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil)

	gone := mustAcquire(t, r, "fill", "http://gone", leaseTTL)
	if _, err := r.TakeOver(ctx, "fill", "http://someone-else", "http://c", leaseTTL); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("TakeOver naming the wrong holder = %v, want ErrLeaseHeld", err)
	}
	mustHolder(t, r, "fill", "http://gone")
	c, err := r.TakeOver(ctx, "fill", "http://gone", "http://c", leaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	mustHolder(t, r, "fill", "http://c")
	if ok, _ := gone.Renew(ctx); ok {
		t.Fatal("the gone holder renewed a lease taken over")
	}
	if ok, err := c.Renew(ctx); !ok || err != nil {
		t.Fatalf("Renew after TakeOver = %v, %v", ok, err)
	}
	// A free lease is simply taken.
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.TakeOver(ctx, "fill", "http://gone", "http://d", leaseTTL); err != nil {
		t.Fatalf("TakeOver of a free lease = %v", err)
	}
	mustHolder(t, r, "fill", "http://d")
}

// TestLeaseKeepRenewsPastTheTTL: a kept lease is still held well after
// its ttl, renewed (its remaining time goes up again); stop releases it.
func TestLeaseKeepRenewsPastTheTTL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil)
	const ttl = 900 * time.Millisecond
	start := time.Now()
	l := mustAcquire(t, r, "pass", "http://a", ttl)
	lost, stop := l.Keep()
	key := r.Key("lease", "pass")
	renewals := 0
	last := r.Client().PTTL(ctx, key).Val()
	eventually(t, "two renewals, past the ttl", func() bool {
		select {
		case <-lost:
			t.Fatal("a kept lease was lost")
		default:
		}
		cur := r.Client().PTTL(ctx, key).Val()
		if cur <= 0 {
			t.Fatalf("the kept lease expired (PTTL %v)", cur)
		}
		if cur > last {
			renewals++
		}
		last = cur
		return renewals >= 2 && time.Since(start) > ttl
	})
	stop()
	stop() // twice is fine
	mustHolder(t, r, "pass", "")
}

// TestLeaseKeepReportsLoss: when the key is taken by another holder (the
// lease expired meanwhile), Keep closes lost; stop then leaves the new
// holder's lease alone.
func TestLeaseKeepReportsLoss(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil)
	l := mustAcquire(t, r, "pass", "http://a", 150*time.Millisecond)
	lost, stop := l.Keep()
	defer stop()
	expire(t, r, "pass")
	mustAcquire(t, r, "pass", "http://b", leaseTTL)
	select {
	case <-lost:
	case <-time.After(20 * time.Second):
		t.Fatal("loss of the lease not reported")
	}
	stop()
	mustHolder(t, r, "pass", "http://b")
}
