package cluster

import (
	"context"
	"hash/fnv"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Members is this replica's view of the live replicas: each registers the
// URL at which the others reach it in a sorted set scored by its expiry
// (Redis's own clock, so the replicas' clocks may disagree), renewed by a
// heartbeat. Owner picks one replica per key by rendezvous
// (highest-random-weight) hashing, so that a replica coming or going moves
// only the keys it owned.
type Members struct {
	r    *Redis
	self string
	ttl  time.Duration

	mu       sync.Mutex
	live     []string
	suspects map[string]time.Time

	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// DefaultMemberTTL is how long a replica stays a member without a
// heartbeat (it beats every third of it).
const DefaultMemberTTL = 10 * time.Second

// heartbeat registers ARGV[1] until now+ARGV[2] ms, forgets the expired
// and returns the live members, on Redis's clock.
var heartbeatScript = redis.NewScript(`
local t = redis.call("time")
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if ARGV[1] ~= "" then redis.call("zadd", KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
redis.call("zremrangebyscore", KEYS[1], "-inf", now)
return redis.call("zrangebyscore", KEYS[1], now, "+inf")`)

// JoinMembers starts the heartbeat of self (the advertised URL; "" for a
// replica that only follows others' fills and is never asked for one)
// and returns the view. Close leaves.
func JoinMembers(ctx context.Context, r *Redis, self string, ttl time.Duration) *Members {
	if ttl <= 0 {
		ttl = DefaultMemberTTL
	}
	m := &Members{r: r, self: self, ttl: ttl, suspects: map[string]time.Time{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	m.beat(ctx)
	go m.run(context.WithoutCancel(ctx))
	return m
}

// ValidAdvertise reports whether u can be a member's URL: http or https,
// a host (an IP address or a name of letters, digits, '.', '-' and '_')
// and a port from 1 to 65535, nothing else (not even an empty query or
// fragment, which would swallow the peer path). Entries of the members set
// that are not are ignored: fills are never asked (with the cluster
// secret) from a URL of another shape, whoever wrote it into Redis.
func ValidAdvertise(u string) bool {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || (p.Path != "" && p.Path != "/") ||
		strings.ContainsAny(u, "?#") || p.User != nil || p.Opaque != "" {
		return false
	}
	port, err := strconv.Atoi(p.Port())
	return err == nil && port >= 1 && port <= 65535 && strconv.Itoa(port) == p.Port() && validMemberHost(p.Hostname())
}

// validMemberHost reports whether h is an IP address (without a zone) or
// a host name.
func validMemberHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return h != "" && strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == ""
}

// Self is this replica's advertised URL.
func (m *Members) Self() string { return m.self }

func (m *Members) run(base context.Context) {
	defer close(m.stopped)
	t := time.NewTicker(m.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(base, m.ttl/3)
			m.beat(ctx)
			cancel()
		}
	}
}

// beat renews this replica's registration and refreshes the view. While
// Redis is down the view keeps its last state (Owner then answers self).
func (m *Members) beat(ctx context.Context) {
	res, err := heartbeatScript.Run(ctx, m.r.c, []string{m.r.Key("members")}, m.self, m.ttl.Milliseconds()).StringSlice()
	if m.r.Observe(err) != nil {
		return
	}
	res = slices.DeleteFunc(res, func(u string) bool { return !ValidAdvertise(u) })
	slices.Sort(res)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live = res
	now := time.Now()
	for u, until := range m.suspects {
		if now.After(until) {
			delete(m.suspects, u)
		}
	}
}

// Live returns the live members (sorted), this replica included when it
// advertises.
func (m *Members) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.live)
	if m.self != "" && !slices.Contains(out, m.self) {
		out = append(out, m.self)
		slices.Sort(out)
	}
	return out
}

// Suspect takes u out of Owner's choices for a member TTL: its stream
// broke or it did not answer, and its registration may outlive it.
func (m *Members) Suspect(u string) {
	if u == m.self {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.suspects[u] = time.Now().Add(m.ttl)
}

// Suspected reports whether u is suspected of being gone.
func (m *Members) Suspected(u string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	until, ok := m.suspects[u]
	return ok && time.Now().Before(until)
}

// Owner returns the member that owns key: the live, unsuspected member
// with the highest rendezvous weight. With Redis down, or no member
// known, every replica owns everything ("" for a replica that does not
// advertise).
func (m *Members) Owner(key string) string {
	if !m.r.Up() {
		return m.self
	}
	best, bestW := m.self, uint64(0)
	if m.self != "" {
		bestW = weight(m.self, key)
	}
	for _, u := range m.Live() {
		if m.Suspected(u) {
			continue
		}
		if w := weight(u, key); best == "" || w > bestW || (w == bestW && u < best) {
			best, bestW = u, w
		}
	}
	return best
}

// weight is the rendezvous weight of member for key.
func weight(member, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return mix(h.Sum64())
}

// mix spreads FNV's output (a finalizer from splitmix64): FNV alone
// weighs keys that differ in their last bytes too alike.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Close stops the heartbeat and leaves (the others stop choosing this
// replica at once rather than after the TTL).
func (m *Members) Close() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		<-m.stopped
		if m.self == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.ttl/3)
		defer cancel()
		err = m.r.Observe(m.r.c.ZRem(ctx, m.r.Key("members"), m.self).Err())
	})
	return err
}
