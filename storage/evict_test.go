package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

const day = 24 * time.Hour

// now is the fake clock of the eviction tests.
var now = t0.Add(100 * day)

// cacheItem is one piece of content of an eviction fixture.
type cacheItem struct {
	name     string
	size     int           // blobs only; a manifest's size is its JSON's
	age      time.Duration // since the last access, at now
	children []string      // makes it a manifest
}

// The shared fixture: five blobs of 100 bytes, from the least to the most
// recently used, a manifest over a and c, one over d, and an index over m1.
var cacheItems = []cacheItem{
	{name: "a", size: 100, age: 90 * day},
	{name: "b", size: 100, age: 61 * day},
	{name: "c", size: 100, age: 59 * day},
	{name: "d", size: 100, age: day},
	{name: "e", size: 100, age: time.Hour},
	{name: "m1", age: time.Minute, children: []string{"a", "c"}},
	{name: "m2", age: time.Minute, children: []string{"d"}},
	{name: "idx", age: time.Minute, children: []string{"m1"}},
}

const testRepo = "docker.io/library/app"

type stocked struct {
	s     *Store
	idx   Index
	d     map[string]digest.Digest
	names map[digest.Digest]string
	sizes map[string]int64
	total int64
}

func (st *stocked) sizeOf(names ...string) int64 {
	var n int64
	for _, name := range names {
		n += st.sizes[name]
	}
	return n
}

func stock(t *testing.T, s *Store, idx Index, items []cacheItem) *stocked {
	t.Helper()
	st := &stocked{s: s, idx: idx, d: map[string]digest.Digest{}, names: map[digest.Digest]string{}, sizes: map[string]int64{}}
	for _, it := range items {
		var content []byte
		e := IndexEntry{Kind: KindBlob, Added: now.Add(-it.age), LastAccess: now.Add(-it.age), Repos: []string{testRepo}}
		if it.children == nil {
			content = append([]byte{0x1f, 0x8b}, []byte(fmt.Sprintf("%s%0*d", it.name, it.size-2-len(it.name), 0))...)
		} else {
			layers := ""
			for i, c := range it.children {
				if i > 0 {
					layers += ","
				}
				layers += fmt.Sprintf(`{"digest":%q}`, st.d[c])
			}
			content = []byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[%s]}`, layers))
			e.Kind = KindManifest
			e.Children, _ = ManifestChildren(content)
		}
		e.Digest, e.Size = storeSmall(t, s, content), int64(len(content))
		link(t, s, testRepo, e.Digest, "")
		mustPut(t, idx, e)
		st.d[it.name], st.names[e.Digest] = e.Digest, it.name
		st.total += e.Size
		st.sizes[it.name] = e.Size
	}
	if err := s.PutTag(t.Context(), "docker.io", "library/app", "latest", TagRecord{Digest: st.d["idx"]}); err != nil {
		t.Fatal(err)
	}
	return st
}

// reasons names the removed entries of a report.
func (st *stocked) reasons(rep Report) map[string]string {
	out := map[string]string{}
	for d, r := range rep.Reason {
		out[st.names[d]] = r
	}
	return out
}

func (st *stocked) assertPresent(t *testing.T, name string, want bool) {
	t.Helper()
	ctx := t.Context()
	d := st.d[name]
	_, err := st.s.StatBlob(ctx, d)
	_, ok, gerr := st.idx.Get(ctx, d)
	_, lerr := st.s.Linked(ctx, "docker.io", "library/app", d)
	if gerr != nil {
		t.Fatal(gerr)
	}
	if want && (err != nil || !ok || lerr != nil) {
		t.Errorf("%s: want kept; blob %v, entry %v, link %v", name, err, ok, lerr)
	}
	if !want && (!errors.Is(err, ErrNotFound) || ok || !errors.Is(lerr, ErrNotFound)) {
		t.Errorf("%s: want removed; blob %v, entry %v, link %v", name, err, ok, lerr)
	}
}

func TestEvictorPass(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	names := func(items []cacheItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.name)
		}
		return out
	}
	cases := []struct {
		name    string
		opts    func(st *stocked) EvictOptions
		pinned  []string
		want    map[string]string // removed → reason
		wantLog bool
	}{
		{
			name: "under every bound nothing goes",
			opts: func(st *stocked) EvictOptions { return EvictOptions{MaxSize: st.total} },
			want: map[string]string{},
		},
		{
			name: "size bound evicts least recently used first, manifests follow",
			opts: func(st *stocked) EvictOptions {
				return EvictOptions{MaxSize: st.total - st.sizeOf("a", "m1", "idx") - 1}
			},
			want: map[string]string{"a": ReasonSize, "m1": ReasonManifest, "idx": ReasonManifest, "b": ReasonSize},
		},
		{
			name:   "pinned entries are skipped",
			opts:   func(st *stocked) EvictOptions { return EvictOptions{MaxSize: st.total - 150} },
			pinned: []string{"a"},
			want:   map[string]string{"b": ReasonSize, "c": ReasonSize, "m1": ReasonManifest, "idx": ReasonManifest},
		},
		{
			name:   "a pinned manifest stays with its index",
			opts:   func(st *stocked) EvictOptions { return EvictOptions{MaxSize: st.total - 50} },
			pinned: []string{"m1"},
			want:   map[string]string{"a": ReasonSize},
		},
		{
			name: "expiry: older than the inactive time go, recent ones stay",
			opts: func(st *stocked) EvictOptions { return EvictOptions{Inactive: 60 * day} },
			want: map[string]string{"a": ReasonExpired, "b": ReasonExpired, "m1": ReasonManifest, "idx": ReasonManifest},
		},
		{
			name: "expiry first, then size",
			opts: func(st *stocked) EvictOptions {
				return EvictOptions{Inactive: 60 * day, MaxSize: st.sizeOf("e")}
			},
			want: map[string]string{"a": ReasonExpired, "b": ReasonExpired, "m1": ReasonManifest, "idx": ReasonManifest,
				"c": ReasonSize, "d": ReasonSize, "m2": ReasonManifest},
		},
		{
			name: "min-free with a fake free space",
			opts: func(st *stocked) EvictOptions {
				// The disk gains what the cache frees.
				return EvictOptions{MinFree: 1000, FreeSpace: func() (int64, error) {
					usage, _, err := st.idx.Usage(t.Context())
					return 850 + st.total - usage, err
				}}
			},
			want: map[string]string{"a": ReasonMinFree, "m1": ReasonManifest, "idx": ReasonManifest},
		},
		{
			name: "unknown free space skips the min-free rule",
			opts: func(st *stocked) EvictOptions {
				return EvictOptions{MinFree: 1000, FreeSpace: func() (int64, error) { return 0, errors.New("statfs failed") }}
			},
			want: map[string]string{},
		},
		{
			name:    "everything pinned: bound not met, logged",
			opts:    func(st *stocked) EvictOptions { return EvictOptions{MaxSize: 1} },
			pinned:  names(cacheItems),
			want:    map[string]string{},
			wantLog: true,
		},
	}
	for _, b := range allBackends() {
		for _, impl := range indexesFor(b) {
			for _, tc := range cases {
				t.Run(b.name+"/"+impl.name+"/"+tc.name, func(t *testing.T) {
					s := b.new(t)
					st := stock(t, s, impl.open(t), cacheItems)
					opts := tc.opts(st)
					opts.Now = func() time.Time { return now }
					opts.Pinned = func(d digest.Digest) bool { return slices.Contains(tc.pinned, st.names[d]) }
					var logs []string
					opts.Log = func(msg string, _ map[string]any) { logs = append(logs, msg) }

					plan, err := s.Plan(ctx, st.idx, opts)
					if err != nil {
						t.Fatal(err)
					}
					for _, it := range cacheItems {
						st.assertPresent(t, it.name, true) // a plan removes nothing
					}
					ev, err := NewEvictor(s, st.idx, opts)
					if err != nil {
						t.Fatal(err)
					}
					rep, err := ev.Pass(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if got := st.reasons(rep); !maps.Equal(got, tc.want) {
						t.Fatalf("removed %v, want %v", got, tc.want)
					}
					if !slices.EqualFunc(plan.Removed, rep.Removed, func(a, b IndexEntry) bool { return a.Digest == b.Digest }) ||
						!maps.Equal(plan.Reason, rep.Reason) || plan.Bytes != rep.Bytes || plan.After != rep.After {
						t.Fatalf("Plan %v differs from Pass %v", st.reasons(plan), st.reasons(rep))
					}
					for _, it := range cacheItems {
						_, removed := tc.want[it.name]
						st.assertPresent(t, it.name, !removed)
					}
					var wantBytes int64
					for _, e := range rep.Removed {
						wantBytes += e.Size
					}
					usage, _, _ := st.idx.Usage(ctx)
					if rep.Bytes != wantBytes || rep.Before != st.total || rep.After != usage || usage != st.total-wantBytes {
						t.Fatalf("report bytes %d before %d after %d, usage %d; want bytes %d before %d", rep.Bytes, rep.Before, rep.After, usage, wantBytes, st.total)
					}
					if opts.MaxSize > 0 && !tc.wantLog && usage > opts.MaxSize {
						t.Fatalf("usage %d over MaxSize %d after a pass", usage, opts.MaxSize)
					}
					if got := slices.Contains(logs, "cache eviction: bound not met, everything left is in use"); got != tc.wantLog {
						t.Fatalf("bound-not-met log = %v, want %v (logs %v)", got, tc.wantLog, logs)
					}
					if _, err := s.GetTag(ctx, "docker.io", "library/app", "latest"); err != nil {
						t.Fatalf("tag record removed: %v", err)
					}
					// A second pass finds nothing more to do.
					if rep, err := ev.Pass(ctx); err != nil || len(rep.Removed) != 0 {
						t.Fatalf("second pass removed %v, %v", st.reasons(rep), err)
					}
				})
			}
		}
	}
}

func TestEvictorLRUFollowsTouches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, impl := range indexImpls() {
		t.Run(impl.name, func(t *testing.T) {
			s := backends()[0].new(t)
			items := cacheItems[:5] // blobs only
			st := stock(t, s, impl.open(t), items)
			// a and b are read now: c is the least recently used. The
			// touches are batched; the pass flushes them first.
			st.idx.Touch(st.d["a"], now)
			st.idx.Touch(st.d["b"], now)
			var told []Report
			ev, err := NewEvictor(s, st.idx, EvictOptions{MaxSize: 300, Now: func() time.Time { return now },
				OnPass: func(r Report) { told = append(told, r) }})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := ev.Pass(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := st.reasons(rep), map[string]string{"c": ReasonSize, "d": ReasonSize}; !maps.Equal(got, want) {
				t.Fatalf("removed %v, want %v", got, want)
			}
			if _, err := ev.Pass(ctx); err != nil { // removes nothing: not told
				t.Fatal(err)
			}
			if len(told) != 1 || told[0].Bytes != rep.Bytes || len(told[0].Removed) != 2 {
				t.Fatalf("OnPass told %+v, want the one report %+v", told, rep)
			}
		})
	}
}

func TestEvictorRunKick(t *testing.T) {
	t.Parallel()
	s := backends()[0].new(t)
	st := stock(t, s, NewMemIndex(), cacheItems[:5])
	passes := make(chan map[string]any, 10)
	ev, err := NewEvictor(s, st.idx, EvictOptions{
		MaxSize: 250,
		Now:     func() time.Time { return now },
		Log: func(msg string, f map[string]any) {
			if msg == "cache eviction" {
				passes <- f
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { ev.Run(ctx); close(done) }()
	for range 5 {
		ev.Kick() // never blocks; coalesced
	}
	select {
	case f := <-passes:
		if f["removed"] != 3 || f["size"] != 3 {
			t.Fatalf("pass fields = %v", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pass after Kick")
	}
	if usage, _, _ := st.idx.Usage(t.Context()); usage > 250 {
		t.Fatalf("usage %d over the bound after a background pass", usage)
	}
	cancel()
	<-done
}

func TestEvictorOptions(t *testing.T) {
	t.Parallel()
	s := backends()[0].new(t)
	idx := NewMemIndex()
	if _, err := NewEvictor(s, idx, EvictOptions{MinFree: 1}); err == nil {
		t.Fatal("MinFree without FreeSpace accepted")
	}
	if _, err := NewEvictor(nil, idx, EvictOptions{}); err == nil {
		t.Fatal("nil store accepted")
	}
	cases := []struct {
		name    string
		maxSize int64
		size    int64
		want    bool
	}{
		{"no bound", 0, 1 << 40, true},
		{"below", 100, 99, true},
		{"equal", 100, 100, true},
		{"above", 100, 101, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := NewEvictor(s, idx, EvictOptions{MaxSize: tc.maxSize})
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.Fits(tc.size); got != tc.want {
				t.Fatalf("Fits(%d) with MaxSize %d = %v", tc.size, tc.maxSize, got)
			}
		})
	}
}

// TestEvictorLead: a pass that Lead refuses (another replica evicts) is
// skipped: quietly from Run and MakeRoom, with ErrEvictingElsewhere from
// Pass. A pass it allows runs on the context it returns (ended when the
// leadership is lost) and releases it at the end.
func TestEvictorLead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := backends()[0].new(t)
	st := stock(t, s, NewMemIndex(), cacheItems[:5])
	var logs []string
	asked := make(chan struct{}, 1)
	released := 0
	ev, err := NewEvictor(s, st.idx, EvictOptions{
		MaxSize: 250,
		Now:     func() time.Time { return now },
		Log:     func(msg string, _ map[string]any) { logs = append(logs, msg) },
		Lead: func(ctx context.Context) (context.Context, func(), bool) {
			asked <- struct{}{}
			return ctx, func() { released++ }, false
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := ev.Pass(ctx); !errors.Is(err, ErrEvictingElsewhere) || len(rep.Removed) != 0 {
		t.Fatalf("Pass without the lead = %d removed, %v; want ErrEvictingElsewhere", len(rep.Removed), err)
	}
	<-asked
	if rep, err := ev.MakeRoom(ctx, 100); err != nil || len(rep.Removed) != 0 {
		t.Fatalf("MakeRoom without the lead = %d removed, %v", len(rep.Removed), err)
	}
	<-asked
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { ev.Run(runCtx); close(done) }()
	ev.Kick()
	<-asked // Run asked, and skipped its pass
	cancel()
	<-done
	if usage, _, _ := st.idx.Usage(ctx); usage != st.total || len(logs) != 0 || released != 0 {
		t.Fatalf("skipped passes: usage %d of %d, logs %v, released %d", usage, st.total, logs, released)
	}

	// Leading, but the leadership is lost as the pass starts: it stops.
	ev.opts.Lead = func(ctx context.Context) (context.Context, func(), bool) {
		lctx, lose := context.WithCancel(ctx)
		lose()
		return lctx, func() { released++ }, true
	}
	if _, err := ev.Pass(ctx); err == nil || !strings.Contains(err.Error(), "leadership lost") {
		t.Fatalf("Pass after losing the lead = %v", err)
	}
	if released != 1 {
		t.Fatalf("released %d times, want 1", released)
	}
	ev.opts.Lead = func(ctx context.Context) (context.Context, func(), bool) { return ctx, func() { released++ }, true }
	if rep, err := ev.Pass(ctx); err != nil || len(rep.Removed) != 3 || released != 2 {
		t.Fatalf("Pass with the lead = %d removed, %v, released %d", len(rep.Removed), err, released)
	}
}

// TestEvictorRetriesARefusedPass: a pass Lead refuses (another replica
// was evicting while this one committed) is tried again a second later
// by Run, so the cache does not stay over its bound until the next
// periodic pass.
func TestEvictorRetriesARefusedPass(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		s := backends()[0].new(t)
		st := stock(t, s, NewMemIndex(), cacheItems[:5])
		var asked atomic.Int32
		ev, err := NewEvictor(s, st.idx, EvictOptions{
			MaxSize:  250,
			Now:      func() time.Time { return now },
			Interval: time.Hour,
			Lead: func(ctx context.Context) (context.Context, func(), bool) {
				return ctx, func() {}, asked.Add(1) > 1 // refused the first time
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go ev.Run(runCtx)
		if rep, err := ev.MakeRoom(ctx, 0); err != nil || len(rep.Removed) != 0 {
			t.Fatalf("refused MakeRoom = %d removed, %v", len(rep.Removed), err)
		}
		synctest.Wait()
		if usage, _, _ := st.idx.Usage(ctx); usage != st.total {
			t.Fatalf("usage %d right after the refusal, want %d", usage, st.total)
		}
		time.Sleep(refusedRetry)
		synctest.Wait()
		if usage, _, _ := st.idx.Usage(ctx); usage > 250 || asked.Load() != 2 {
			t.Fatalf("after the retry: usage %d (bound 250), Lead asked %d times", usage, asked.Load())
		}
	})
}
