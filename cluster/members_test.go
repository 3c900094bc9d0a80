package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/redis/go-redis/v9"
)

// TestRendezvousMovesOnlyTheLeaversDigests: with 3 members each owns
// about a third of 3000 digests; when one leaves, only its digests move,
// and when it comes back they return to it.
func TestRendezvousMovesOnlyTheLeaversDigests(t *testing.T) {
	t.Parallel()
	members := []string{"http://10.0.0.1:3128", "http://10.0.0.2:3128", "http://10.0.0.3:3128"}
	owner := func(live []string, key string) string {
		best, bestW := "", uint64(0)
		for _, u := range live {
			if w := weight(u, key); best == "" || w > bestW {
				best, bestW = u, w
			}
		}
		return best
	}
	count := map[string]int{}
	moved := 0
	for i := range 3000 {
		key := fmt.Sprintf("fill:sha256:%064x", i)
		before := owner(members, key)
		count[before]++
		after := owner(members[:2], key)
		if before != after {
			moved++
			if before != members[2] {
				t.Fatalf("%s moved from %s to %s though %s stayed", key, before, after, before)
			}
		}
	}
	for _, u := range members {
		if count[u] < 800 || count[u] > 1200 {
			t.Errorf("%s owns %d of 3000 digests, want about 1000: %v", u, count[u], count)
		}
	}
	if moved != count[members[2]] {
		t.Errorf("%d digests moved when %s left, want exactly its %d", moved, members[2], count[members[2]])
	}
}

// TestMembersIgnoreMalformedEntries: an entry of the members set that is
// no http(s)://host:port URL (written by anything but a replica) is never
// chosen as an owner, so the cluster secret is never sent to it.
func TestMembersIgnoreMalformedEntries(t *testing.T) {
	t.Parallel()
	rd := testutil.StartRedis(t)
	r, err := OpenRedis(t.Context(), RedisOptions{Addr: rd.Addr, Prefix: "malformed"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bad := []string{"file:///etc/passwd", "http://evil.example/path:1", "http://user:pw@10.0.0.9:3128", "10.0.0.9:3128", "http://10.0.0.9", "gopher://10.0.0.9:70"}
	for _, u := range bad {
		if err := r.Client().ZAdd(t.Context(), r.Key("members"), redisZ(time.Now().Add(time.Hour), u)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	m := JoinMembers(t.Context(), r, "http://127.0.0.1:3128", time.Minute)
	defer m.Close()
	if live := m.Live(); !slices.Equal(live, []string{"http://127.0.0.1:3128"}) {
		t.Errorf("live members %v, want only the replica itself", live)
	}
	for i := range 100 {
		if o := m.Owner(fmt.Sprintf("fill:%d", i)); o != "http://127.0.0.1:3128" {
			t.Fatalf("owner %q", o)
		}
	}
}

// redisZ is a members-set entry that expires at exp.
func redisZ(exp time.Time, member string) redis.Z {
	return redis.Z{Score: float64(exp.UnixMilli()), Member: member}
}
