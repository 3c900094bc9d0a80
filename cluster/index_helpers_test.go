package cluster

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/sirupsen/logrus"
)

// prefixSeq makes the key prefixes that separate tests sharing one
// redis-server.
var prefixSeq atomic.Int64

func uniquePrefix() string { return fmt.Sprintf("t%d", prefixSeq.Add(1)) }

// testRedis opens a connection to addr under prefix, closed after the
// test; its log goes to logs when set. Redis is pinged every 10ms while
// down, unless opts say otherwise.
func testRedis(t *testing.T, addr, prefix string, logs *testutil.SyncBuffer, opts ...func(*RedisOptions)) *Redis {
	t.Helper()
	o := RedisOptions{Addr: addr, Prefix: prefix, RetryEvery: 10 * time.Millisecond, Timeout: 2 * time.Second}
	if logs != nil {
		l := logrus.New()
		l.SetOutput(logs)
		l.SetLevel(logrus.DebugLevel)
		o.Log = l
	}
	for _, f := range opts {
		f(&o)
	}
	r, err := OpenRedis(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// testIndex is an Index over r without background flushes, closed after
// the test (before r).
func testIndex(t *testing.T, r *Redis, opts IndexOptions) *Index {
	t.Helper()
	if opts.FlushInterval == 0 {
		opts.FlushInterval = -1
	}
	x := NewIndex(r, opts)
	t.Cleanup(func() { x.Close() })
	return x
}

// eventually polls cond until it holds or 20s passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count is how many times s was logged.
func count(logs *testutil.SyncBuffer, s string) int { return strings.Count(logs.String(), s) }
