package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"
)

// Degraded mode of the shared index: while Redis is down, Put, AddRepo
// and Remove go to an in-memory journal (bounded by JournalLimit) and
// return nil; when Redis answers again (Redis.OnRecover, or the periodic
// check) the journal is replayed in order. While the journal is not
// empty, new writes queue behind it, so that a replica's writes reach
// Redis in the order it made them. Past the bound the journal is dropped
// and the index is reconciled with the storage instead.

// op is one journaled write.
type op struct {
	put, remove bool
	e           storage.IndexEntry // put
	d           digest.Digest      // remove, add repo
	repo        string             // add repo
}

func (x *Index) callOf(o *op) call {
	switch {
	case o.put:
		return x.putCall(o.e)
	case o.remove:
		return x.removeCall(o.d)
	}
	return x.addRepoCall(o.d, o.repo)
}

func (x *Index) callsOf(ops []*op) []call {
	calls := make([]call, len(ops))
	for i, o := range ops {
		calls[i] = x.callOf(o)
	}
	return calls
}

// journal holds the writes Redis has not got yet.
type journal struct {
	mu        sync.Mutex
	ops       []*op
	limit     int
	overflow  bool // ops were dropped since the last replay
	dropped   int
	reconcile bool // a reconcile with the storage is due
}

// hold journals ops when writes must wait (Redis down, or earlier writes
// still queued); it reports whether it did, and whether the journal
// overflowed now.
func (j *journal) hold(ops []*op, down bool) (held, overflowed bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !down && len(j.ops) == 0 && !j.overflow {
		return false, false
	}
	return true, j.addLocked(ops)
}

// add journals ops that Redis refused for being down.
func (j *journal) add(ops []*op) (overflowed bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.addLocked(ops)
}

func (j *journal) addLocked(ops []*op) bool {
	if j.overflow {
		j.dropped += len(ops)
		return false
	}
	if len(j.ops)+len(ops) > j.limit {
		j.dropped, j.ops, j.overflow = len(j.ops)+len(ops), nil, true
		return true
	}
	j.ops = append(j.ops, ops...)
	return false
}

// peek returns up to n ops from the head. An overflow becomes a due
// reconcile: writes from now on go to Redis, and the reconcile that
// follows covers the dropped ones.
func (j *journal) peek(n int) []*op {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.overflow {
		j.overflow, j.dropped, j.reconcile = false, 0, true
	}
	return append([]*op(nil), j.ops[:min(n, len(j.ops))]...)
}

// pop removes done from the head, as far as it is still the head (an
// overflow may have dropped the journal meanwhile).
func (j *journal) pop(done []*op) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, o := range done {
		if len(j.ops) == 0 || j.ops[0] != o {
			return
		}
		j.ops[0] = nil
		j.ops = j.ops[1:]
	}
	if len(j.ops) == 0 {
		j.ops = nil
	}
}

func (j *journal) len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.ops)
}

func (j *journal) setReconcile() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reconcile = true
}

func (j *journal) takeReconcile() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.reconcile
	j.reconcile = false
	return r
}

// replayBatch is how many journaled writes go to Redis per round trip.
const replayBatch = 256

// write sends ops to Redis, or journals them while Redis is down (or
// earlier writes wait in the journal). Errors that Redis answered (a
// script failing) are returned.
func (x *Index) write(ctx context.Context, ops ...*op) error {
	if err := x.check(ctx); err != nil {
		return err
	}
	if held, overflowed := x.journal.hold(ops, !x.r.Up()); held {
		x.held(overflowed)
		return nil
	}
	var failed []*op
	var errs []error
	results := x.run(ctx, x.callsOf(ops))
	for i, o := range ops {
		switch err := results[i]; {
		case err == nil:
		case unavailable(err):
			failed = append(failed, o)
		default:
			errs = append(errs, err)
		}
	}
	if len(failed) > 0 {
		x.held(x.journal.add(failed))
	}
	return errors.Join(errs...)
}

// held follows writes into the journal: an overflow is logged (once per
// outage), and a Redis that answers is asked to take them.
func (x *Index) held(overflowed bool) {
	if overflowed {
		x.log.WithField("limit", x.opts.JournalLimit).Warn("cache index: too many writes while redis is down; " +
			"dropped them, the index is reconciled with the storage when redis answers")
	}
	if x.r.Up() {
		x.kickLoop()
	}
}

// kickLoop asks the index's goroutine to replay the journal, check the
// index's epoch and write batched accesses now. It never blocks.
func (x *Index) kickLoop() {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// drain replays the journal in order. It stops at the first write that
// Redis did not take for being down (kept, with everything after it); a
// write Redis refused otherwise is dropped and logged.
func (x *Index) drain(ctx context.Context) error {
	x.replay.Lock()
	defer x.replay.Unlock()
	replayed := 0
	defer func() {
		if replayed > 0 {
			x.log.WithField("writes", replayed).Info("cache index: replayed the writes made while redis was down")
		}
	}()
	for {
		batch := x.journal.peek(replayBatch)
		if len(batch) == 0 {
			return nil
		}
		if !x.r.Up() {
			return ErrDegraded
		}
		errs := x.run(ctx, x.callsOf(batch))
		n := 0
		for ; n < len(errs) && !retryable(errs[n]); n++ {
			if errs[n] != nil {
				x.log.WithError(errs[n]).Warn("cache index: a write made while redis was down failed on replay; dropped")
			}
		}
		x.journal.pop(batch[:n])
		replayed += n
		if n < len(batch) {
			return errs[n]
		}
	}
}

// retryable reports a write that did not happen but may later.
func retryable(err error) bool {
	return unavailable(err) || noScript(err) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// loop is the index's goroutine: catch up when kicked (Redis answers
// again, writes queued) and every FlushInterval.
func (x *Index) loop(ctx context.Context) {
	defer x.wg.Done()
	var tick <-chan time.Time
	if x.opts.FlushInterval > 0 {
		t := time.NewTicker(x.opts.FlushInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		case <-tick:
		}
		if x.r.Up() {
			x.catchUp(ctx)
		}
	}
}

// catchUp checks that Redis still has the index, replays the journal,
// writes batched accesses and reconciles the index when writes were lost.
func (x *Index) catchUp(ctx context.Context) {
	lost, err := x.checkEpoch(ctx)
	if err != nil {
		return // retried on the next kick or tick
	}
	if lost {
		x.journal.setReconcile()
	}
	if err := x.flush(ctx); err != nil && ctx.Err() == nil && x.r.Up() {
		x.log.WithError(err).Warn("cache index: writing to redis failed; kept for the next try")
	}
	if x.journal.takeReconcile() {
		x.reconcile(ctx, lost)
	}
}

// checkEpoch compares the index's epoch in Redis with the one seen last.
// A missing epoch means Redis has no index (new, or it lost it): this
// replica sets a new one, and created reports that it won that race (the
// index must be built from the storage, by this replica only). Called by
// NewIndex and then only by the index's goroutine.
func (x *Index) checkEpoch(ctx context.Context) (created bool, err error) {
	cur, err := x.r.c.Get(ctx, x.epochKey).Result()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if x.r.Observe(err) != nil {
		return false, err
	}
	if cur != "" {
		x.epoch = cur
		return false, nil
	}
	tok := token()
	ok, err := x.r.c.SetNX(ctx, x.epochKey, tok, 0).Result()
	if x.r.Observe(err) != nil {
		return false, err
	}
	if !ok {
		cur, err = x.r.c.Get(ctx, x.epochKey).Result()
		if x.r.Observe(err) != nil && !errors.Is(err, redis.Nil) {
			return false, err
		}
		x.epoch = cur
		return false, nil
	}
	x.epoch = tok
	return true, nil
}

// reconcile repairs the index from the storage after writes were lost;
// a failure leaves it due for the next catch-up.
func (x *Index) reconcile(ctx context.Context, lost bool) {
	why := "writes made while redis was down were dropped (journal full)"
	if lost {
		why = "redis lost the index (restarted empty)"
	}
	log := x.log.WithField("reason", why)
	if x.opts.Reconcile == nil {
		log.Warn("cache index may disagree with the storage until it is reconciled (nothing wired to do it)")
		return
	}
	log.Warn("reconciling the cache index with the storage")
	start := time.Now()
	if err := x.opts.Reconcile(ctx); err != nil {
		if ctx.Err() == nil {
			log.WithError(err).Warn("reconciling the cache index failed; tried again later")
			x.journal.setReconcile()
		}
		return
	}
	log.WithField("dur_ms", time.Since(start).Milliseconds()).Info("cache index reconciled with the storage")
}
