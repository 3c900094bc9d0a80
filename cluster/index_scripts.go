package cluster

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"
)

// The shared index in Redis. Every key starts with the Redis prefix
// (RedisOptions.Prefix, "crp" by default), so that several caches share
// one Redis:
//
//	<p>:idx:entry:<digest>  hash, one per entry: size, kind,
//	                        added_s/added_ns and access_s/access_ns (Unix
//	                        seconds and nanoseconds: exact times, compared
//	                        as numbers by the scripts), am (its member of
//	                        idx:access), r:<repo> per repository, c:<child>
//	                        per child of a manifest
//	<p>:idx:access          sorted set, every score 0, members
//	                        <16 hex digits of LastAccess in ns since 1970,
//	                        0 before>‖<digest>: ByLastAccess in lexicographic
//	                        order, ties by digest, the order of BoltIndex
//	<p>:idx:digests         sorted set, every score 0, members digests:
//	                        ByDigest
//	<p>:idx:refs:<child>    set of the manifests listing child (Referrers)
//	<p>:idx:usage           hash: bytes, count (Usage)
//	<p>:idx:epoch           a random token, set once per Redis dataset: when
//	                        it vanishes, Redis lost the index (restarted
//	                        without persistence) and the index is reconciled
//	                        with the storage
//
// The access order is a lexicographic sorted set rather than one scored by
// time: Walk pages with an exclusive cursor (ZRANGE BYLEX after the last
// member seen), which stays exact when fn removes entries and when many
// entries share one access time, where score ties cannot be paged past.
//
// Every change of more than one key is one Lua script, the totals in the
// same script, so that replicas writing at once keep them exact. The
// scripts touch keys they compute from the entry (refs of old children),
// which a standalone Redis allows (not Redis Cluster).

// zeroSec is the Unix second of the zero time.Time: an unset Added.
var zeroSec = strconv.FormatInt(time.Time{}.Unix(), 10)

// putScript merges an entry into the stored one (storage.Index's Put).
// KEYS: entry, access, digests, usage. ARGV: digest, size, kind, added_s,
// added_ns, access_s, access_ns, access member, refs key prefix, number of
// repos, repos…, number of children, children….
var putScript = redis.NewScript(`
local ek, az, dz, uk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local d, refs = ARGV[1], ARGV[9]
local nr = tonumber(ARGV[10])
local nc = tonumber(ARGV[11 + nr])
local as, an, ls, ln, am = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local function before(s1, n1, s2, n2)
  s1, n1, s2, n2 = tonumber(s1), tonumber(n1), tonumber(s2), tonumber(n2)
  return s1 < s2 or (s1 == s2 and n1 < n2)
end
local function zero(s, n) return tonumber(s) == ` + zeroSec + ` and tonumber(n) == 0 end
local old = redis.call('HMGET', ek, 'size', 'added_s', 'added_ns', 'access_s', 'access_ns', 'am')
local delta = tonumber(ARGV[2])
if old[1] then
  delta = delta - tonumber(old[1])
  if not zero(old[2], old[3]) and (zero(as, an) or before(old[2], old[3], as, an)) then as, an = old[2], old[3] end
  if before(ls, ln, old[4], old[5]) then ls, ln, am = old[4], old[5], old[6] end
  if am ~= old[6] then
    redis.call('ZREM', az, old[6])
    redis.call('ZADD', az, 0, am)
  end
  if nc > 0 then
    for _, f in ipairs(redis.call('HKEYS', ek)) do
      if string.sub(f, 1, 2) == 'c:' then
        redis.call('HDEL', ek, f)
        redis.call('SREM', refs .. string.sub(f, 3), d)
      end
    end
  end
else
  redis.call('HINCRBY', uk, 'count', 1)
  redis.call('ZADD', dz, 0, d)
  redis.call('ZADD', az, 0, am)
end
if delta ~= 0 then redis.call('HINCRBY', uk, 'bytes', string.format('%.0f', delta)) end
redis.call('HSET', ek, 'size', ARGV[2], 'kind', ARGV[3], 'added_s', as, 'added_ns', an,
  'access_s', ls, 'access_ns', ln, 'am', am)
for i = 1, nr do redis.call('HSET', ek, 'r:' .. ARGV[10 + i], '1') end
for i = 1, nc do
  local c = ARGV[11 + nr + i]
  redis.call('HSET', ek, 'c:' .. c, '1')
  redis.call('SADD', refs .. c, d)
end
return 1
`)

// removeScript deletes an entry, its referrer edges and its share of the
// totals. KEYS: entry, access, digests, usage. ARGV: digest, refs key
// prefix.
var removeScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'size', 'am')
if not v[1] then return 0 end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'c:' then redis.call('SREM', ARGV[2] .. string.sub(f, 3), ARGV[1]) end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], v[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if tonumber(v[1]) ~= 0 then redis.call('HINCRBY', KEYS[4], 'bytes', string.format('%.0f', 0 - tonumber(v[1]))) end
redis.call('HINCRBY', KEYS[4], 'count', -1)
return 1
`)

// addRepoScript adds a repository to an entry that exists. KEYS: entry.
// ARGV: repo.
var addRepoScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], '1')
return 1
`)

// touchScript writes access times that are later than the stored ones.
// KEYS: access. ARGV: entry key prefix, then per access: digest, access_s,
// access_ns, access member.
var touchScript = redis.NewScript(`
local n = 0
for i = 2, #ARGV, 4 do
  local ek = ARGV[1] .. ARGV[i]
  local old = redis.call('HMGET', ek, 'access_s', 'access_ns', 'am')
  if old[1] then
    local s, ns, o, on = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(old[1]), tonumber(old[2])
    if o < s or (o == s and on < ns) then
      redis.call('HSET', ek, 'access_s', ARGV[i + 1], 'access_ns', ARGV[i + 2], 'am', ARGV[i + 3])
      redis.call('ZREM', KEYS[1], old[3])
      redis.call('ZADD', KEYS[1], 0, ARGV[i + 3])
      n = n + 1
    end
  end
end
return n
`)

var allScripts = []*redis.Script{putScript, removeScript, addRepoScript, touchScript}

// call is one script run.
type call struct {
	s    *redis.Script
	keys []string
	args []any
}

// run runs calls in order in one round trip and returns each one's error.
// A NOSCRIPT reply (Redis restarted and lost its script cache) loads the
// scripts and runs the calls from the first refused one again. The
// outcome goes through Observe.
func (x *Index) run(ctx context.Context, calls []call) []error {
	errs := make([]error, len(calls))
	start := 0
	for attempt := 0; attempt < 2 && start < len(calls); attempt++ {
		cmds, _ := x.r.c.Pipelined(ctx, func(p redis.Pipeliner) error { //nolint:errcheck // every command's error is read below
			for _, c := range calls[start:] {
				c.s.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
		retry := -1
		for i, cmd := range cmds {
			errs[start+i] = cmd.Err()
			if retry < 0 && noScript(cmd.Err()) {
				retry = start + i
			}
		}
		if retry < 0 {
			break
		}
		if err := x.loadScripts(ctx); err != nil {
			for i := retry; i < len(errs); i++ {
				errs[i] = err
			}
			break
		}
		start = retry
	}
	x.observe(errs)
	return errs
}

// observe tells Redis the outcome of a batch: a connection failure if
// any, else an answer.
func (x *Index) observe(errs []error) {
	var first error
	for _, err := range errs {
		if unavailable(err) {
			x.r.record(err)
			return
		}
		if first == nil {
			first = err
		}
	}
	x.r.record(first)
}

func (x *Index) loadScripts(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, x.r.c).Err(); err != nil {
			return err
		}
	}
	return nil
}

func noScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

// timeArgs are the seconds and nanoseconds of t as the scripts compare
// them.
func timeArgs(t time.Time) (sec, nsec string) {
	return strconv.FormatInt(t.Unix(), 10), strconv.Itoa(t.Nanosecond())
}

// accessMember is the member of an entry in idx:access: the access time
// in Unix nanoseconds, times before 1970 as 0 and times past what an
// int64 holds (2262) as its maximum, so that the members sort by time.
func accessMember(d digest.Digest, t time.Time) string {
	var ns uint64
	switch {
	case t.Unix() < 0:
	case t.After(time.Unix(0, math.MaxInt64)):
		ns = math.MaxInt64
	default:
		ns = uint64(t.UnixNano())
	}
	return fmt.Sprintf("%016x", ns) + string(d)
}

// accessMemberLen is the length of the time part of an access member.
const accessMemberLen = 16

func (x *Index) putCall(e storage.IndexEntry) call {
	as, an := timeArgs(e.Added)
	ls, ln := timeArgs(e.LastAccess)
	args := make([]any, 0, 12+len(e.Repos)+len(e.Children))
	args = append(args, string(e.Digest), strconv.FormatInt(e.Size, 10), e.Kind, as, an, ls, ln,
		accessMember(e.Digest, e.LastAccess), x.refsPrefix, len(e.Repos))
	for _, r := range e.Repos {
		args = append(args, r)
	}
	args = append(args, len(e.Children))
	for _, c := range e.Children {
		args = append(args, string(c))
	}
	return call{s: putScript, keys: []string{x.entryKey(e.Digest), x.accessKey, x.digestsKey, x.usageKey}, args: args}
}

func (x *Index) removeCall(d digest.Digest) call {
	return call{s: removeScript, keys: []string{x.entryKey(d), x.accessKey, x.digestsKey, x.usageKey}, args: []any{string(d), x.refsPrefix}}
}

func (x *Index) addRepoCall(d digest.Digest, repo string) call {
	return call{s: addRepoScript, keys: []string{x.entryKey(d)}, args: []any{repo}}
}

// touchCalls are the calls writing accesses, touchChunk per script run.
func (x *Index) touchCalls(pending map[digest.Digest]time.Time) []call {
	var calls []call
	args := []any{x.entryPrefix}
	for d, at := range pending {
		s, ns := timeArgs(at)
		args = append(args, string(d), s, ns, accessMember(d, at))
		if len(args) > 4*touchChunk {
			calls = append(calls, call{s: touchScript, keys: []string{x.accessKey}, args: args})
			args = []any{x.entryPrefix}
		}
	}
	if len(args) > 1 {
		calls = append(calls, call{s: touchScript, keys: []string{x.accessKey}, args: args})
	}
	return calls
}

// touchChunk is how many accesses one script run writes.
const touchChunk = 256

// parseEntry reads an entry hash (HGETALL); ok is false for an empty one
// (no such entry).
func parseEntry(d digest.Digest, h map[string]string) (storage.IndexEntry, bool, error) {
	if len(h) == 0 {
		return storage.IndexEntry{}, false, nil
	}
	e := storage.IndexEntry{Digest: d, Kind: h["kind"]}
	var err error
	if e.Size, err = strconv.ParseInt(h["size"], 10, 64); err != nil {
		return e, false, fmt.Errorf("index entry %s: size: %w", d, err)
	}
	if e.Added, err = parseTime(h["added_s"], h["added_ns"]); err != nil {
		return e, false, fmt.Errorf("index entry %s: added: %w", d, err)
	}
	if e.LastAccess, err = parseTime(h["access_s"], h["access_ns"]); err != nil {
		return e, false, fmt.Errorf("index entry %s: last access: %w", d, err)
	}
	for f := range h {
		if r, ok := strings.CutPrefix(f, "r:"); ok {
			e.Repos = append(e.Repos, r)
		} else if c, ok := strings.CutPrefix(f, "c:"); ok {
			e.Children = append(e.Children, digest.Digest(c))
		}
	}
	slices.Sort(e.Repos)
	slices.Sort(e.Children)
	return e, true, nil
}

func parseTime(sec, nsec string) (time.Time, error) {
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	n, err := strconv.ParseInt(nsec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(s, n).UTC(), nil
}
