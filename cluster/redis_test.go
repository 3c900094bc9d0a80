package cluster

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

func TestRedisOptions(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	cases := []struct {
		name    string
		opts    RedisOptions
		wantErr string
		wantKey string
	}{
		{name: "no address", opts: RedisOptions{}, wantErr: "no Redis address"},
		{name: "prefix with a space", opts: RedisOptions{Addr: srv.Addr, Prefix: "a b"}, wantErr: "want no spaces or braces"},
		{name: "prefix with a brace", opts: RedisOptions{Addr: srv.Addr, Prefix: "{a}"}, wantErr: "want no spaces or braces"},
		{name: "default prefix", opts: RedisOptions{Addr: srv.Addr}, wantKey: "crp:lease:sha256:abc"},
		{name: "own prefix", opts: RedisOptions{Addr: srv.Addr, Prefix: "cache-2"}, wantKey: "cache-2:lease:sha256:abc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := OpenRedis(t.Context(), tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("OpenRedis = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Key("lease", "sha256:abc"); got != tc.wantKey {
				t.Fatalf("Key = %q, want %q", got, tc.wantKey)
			}
			if !r.Up() {
				t.Fatal("not up against a running redis-server")
			}
		})
	}
}

// TestRedisOutageLoggedOnceAndRecovered: a stopped redis-server makes the
// replica degraded (logged once however many commands fail, with the
// cause in Degraded), and when it is back the recovery hooks run and the
// return is logged once.
func TestRedisOutageLoggedOnceAndRecovered(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs)
	var recovered atomic.Int32
	r.OnRecover(func(context.Context) { recovered.Add(1) })
	if down, detail := r.Degraded(); down || detail != "" {
		t.Fatalf("Degraded() = %v, %q with redis up", down, detail)
	}

	srv.Stop()
	for range 5 {
		if r.Observe(r.Client().Ping(ctx).Err()) == nil {
			t.Fatal("PING answered by a stopped server")
		}
	}
	down, detail := r.Degraded()
	if !down || !strings.HasPrefix(detail, "redis unreachable since ") || !strings.Contains(detail, "connection refused") {
		t.Fatalf("Degraded() = %v, %q", down, detail)
	}
	if n := count(&logs, unreachable); n != 1 {
		t.Fatalf("%q logged %d times:\n%s", unreachable, n, logs.String())
	}

	srv.Start()
	eventually(t, "the recovery hook", func() bool { return recovered.Load() == 1 })
	if !r.Up() {
		t.Fatal("Up() = false after the recovery")
	}
	if down, _ := r.Degraded(); down {
		t.Fatal("still degraded after the recovery")
	}
	if n := count(&logs, "redis answers again"); n != 1 {
		t.Fatalf("recovery logged %d times:\n%s", n, logs.String())
	}
}

// TestRedisStartsDegraded: a Redis that is not there yet at start is not
// an error; the replica recovers when it comes.
func TestRedisStartsDegraded(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.Stop()
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs)
	if r.Up() {
		t.Fatal("up without a server")
	}
	var recovered atomic.Int32
	r.OnRecover(func(context.Context) { recovered.Add(1) })
	srv.Start()
	eventually(t, "the recovery hook", func() bool { return recovered.Load() == 1 })
	if n := count(&logs, unreachable); n != 1 {
		t.Fatalf("%q logged %d times:\n%s", unreachable, n, logs.String())
	}
}

// TestRedisRecoveryNoticedByACommand: when a command (not the watcher's
// ping) is the first to find Redis answering again, the recovery hooks
// still run. (They did not: the watcher only ran them after seeing Redis
// down at one of its own ticks.)
func TestRedisRecoveryNoticedByACommand(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil, noPing)
	var recovered atomic.Int32
	r.OnRecover(func(context.Context) { recovered.Add(1) })
	back := simulatedOutage(r)
	if r.Up() {
		t.Fatal("up after a connection failure")
	}
	back()
	eventually(t, "the recovery hook", func() bool { return recovered.Load() == 1 })
}

// TestRedisClosedIsNoOutage: commands failing because the client was
// closed (shutdown) are not an outage of Redis.
func TestRedisClosedIsNoOutage(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Observe(r.Client().Ping(t.Context()).Err()); err == nil {
		t.Fatal("PING on a closed client succeeded")
	}
	if !r.Up() || count(&logs, unreachable) != 0 {
		t.Fatalf("a closed client counted as an outage:\n%s", logs.String())
	}
}
