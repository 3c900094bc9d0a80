package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// RedisOptions say how to reach the shared Redis.
type RedisOptions struct {
	// Addr is host:port.
	Addr     string
	Password string
	DB       int
	// Prefix starts every key, so that several caches share one Redis
	// ("crp" by default; keys read "<prefix>:<kind>:…").
	Prefix string
	// Timeout bounds one command (dial, read, write). Default 2s: a Redis
	// that does not answer within it is down, and the replica serves
	// degraded rather than holding clients.
	Timeout time.Duration
	// RetryEvery is how often a down Redis is pinged. Default 1s.
	RetryEvery time.Duration
	// Log receives the transitions (down once, back once). Default:
	// discarded.
	Log logrus.FieldLogger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnError is told about every command that could not reach Redis
	// (metrics). Default: nobody.
	OnError func()
}

// DefaultPrefix is RedisOptions.Prefix's default.
const DefaultPrefix = "crp"

// Redis is the connection every piece of shared state goes through. It
// tracks whether Redis answers: the first failure is logged once and
// makes the replica degraded (Degraded), a background ping notices when it
// is back, logs that once and runs the recovery hooks (replaying what was
// buffered meanwhile).
type Redis struct {
	c      *redis.Client
	prefix string
	log    logrus.FieldLogger
	now    func() time.Time
	every  time.Duration
	// timeout bounds the watcher's ping as it does every command: a
	// shorter bound (RetryEvery) took a Redis just back, slow to accept a
	// new connection, for down again.
	timeout time.Duration

	mu        sync.Mutex
	down      bool
	since     time.Time
	cause     string
	recovered []func(context.Context)

	// back is signalled when a command finds Redis answering again, so
	// that the watcher runs the recovery hooks whoever noticed.
	back    chan struct{}
	onError func()

	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// OpenRedis connects to Redis. An unreachable Redis is not an error: the
// replica starts degraded and recovers when Redis answers (a Redis pod
// may start after the replicas).
func OpenRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	if opts.Addr == "" {
		return nil, errors.New("cluster: no Redis address")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, " \t\r\n{}") {
		return nil, fmt.Errorf("cluster: Redis key prefix %q: want no spaces or braces", opts.Prefix)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.RetryEvery <= 0 {
		opts.RetryEvery = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		discard := logrus.New()
		discard.SetOutput(io.Discard)
		opts.Log = discard
	}
	c := redis.NewClient(&redis.Options{
		Addr: opts.Addr, Password: opts.Password, DB: opts.DB,
		DialTimeout: opts.Timeout, ReadTimeout: opts.Timeout, WriteTimeout: opts.Timeout,
		// One retry, one dial each: a replica serves degraded rather than
		// waiting (go-redis otherwise dials 5 times, 100ms apart, per
		// attempt: a second per command while Redis is down).
		MaxRetries: 1, DialerRetries: 1, ContextTimeoutEnabled: true,
		DisableIdentity: true,
	})
	if opts.OnError == nil {
		opts.OnError = func() {}
	}
	r := &Redis{c: c, prefix: opts.Prefix, log: opts.Log, now: opts.Now, every: opts.RetryEvery, timeout: opts.Timeout, onError: opts.OnError,
		back: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	pctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	r.record(c.Ping(pctx).Err())
	go r.watch(context.WithoutCancel(ctx))
	return r, nil
}

// Client is the go-redis client.
func (r *Redis) Client() *redis.Client { return r.c }

// Key joins parts under the prefix: Key("lease", "sha256:…") is
// "<prefix>:lease:sha256:…".
func (r *Redis) Key(parts ...string) string {
	return r.prefix + ":" + strings.Join(parts, ":")
}

// Observe records the outcome of a command and returns err. A connection
// failure (anything but a Redis reply error such as redis.Nil or a
// script's error, the caller's own cancellation, and a closed client)
// marks Redis down; an answer marks it up, and when it was down the
// recovery hooks run.
func (r *Redis) Observe(err error) error {
	r.record(err)
	return err
}

// record is Observe for callers that have nothing to return.
func (r *Redis) record(err error) {
	if unavailable(err) {
		r.markDown(err)
	} else if (err == nil || isReply(err)) && r.markUp() {
		select {
		case r.back <- struct{}{}:
		default:
		}
	}
}

// Up reports whether Redis answered last time it was asked.
func (r *Redis) Up() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down
}

// Degraded says, when Redis is down, since when and why: the /readyz
// detail.
func (r *Redis) Degraded() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		return false, ""
	}
	return true, fmt.Sprintf("redis unreachable since %s (%s): serving without cross-replica dedupe, access times buffered",
		r.since.UTC().Format(time.RFC3339), r.cause)
}

// OnRecover registers fn to run (on the watcher's goroutine) each time
// Redis answers again after being down.
func (r *Redis) OnRecover(fn func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recovered = append(r.recovered, fn)
}

// Close stops the watcher and closes the connections.
func (r *Redis) Close() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		<-r.stopped
		err = r.c.Close()
	})
	return err
}

func (r *Redis) markDown(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return
	}
	r.down, r.since, r.cause = true, r.now(), err.Error()
	r.log.WithError(err).Warn("redis unreachable: serving degraded (no cross-replica fill dedupe, index writes and access times buffered) until it answers")
}

// markUp records that Redis answers; it reports whether it was down.
func (r *Redis) markUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		return false
	}
	r.down = false
	r.log.WithField("down_s", int(r.now().Sub(r.since).Seconds())).Info("redis answers again: shared state resumed")
	return true
}

// watch pings a down Redis every RetryEvery and runs the recovery hooks
// each time Redis answers again, whichever command noticed it.
func (r *Redis) watch(base context.Context) {
	defer close(r.stopped)
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.back:
			r.runRecovered(base)
		case <-t.C:
			if !r.Up() {
				ctx, cancel := context.WithTimeout(base, r.timeout)
				r.record(r.c.Ping(ctx).Err())
				cancel()
			}
		}
	}
}

func (r *Redis) runRecovered(base context.Context) {
	r.mu.Lock()
	hooks := slices.Clone(r.recovered)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(base, time.Minute)
	defer cancel()
	for _, fn := range hooks {
		fn(ctx)
	}
}

// isReply reports whether err is an answer from Redis (it is up).
func isReply(err error) bool {
	if errors.Is(err, redis.Nil) {
		return true
	}
	var re redis.Error
	return errors.As(err, &re)
}

// unavailable reports whether err says Redis could not be reached. The
// caller's own cancellation and a closed client (after Close) say nothing
// about Redis. A deadline does: go-redis reports a Redis that does not
// answer within the caller's deadline as context.DeadlineExceeded.
func unavailable(err error) bool {
	if err == nil || isReply(err) || errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	return true
}

// LogClientTo sends go-redis's own messages (failed dials, pool
// trouble), which it writes to stderr otherwise, to log at debug level:
// the connection's state changes are logged once by Redis itself.
func LogClientTo(log logrus.FieldLogger) {
	redis.SetLogger(clientLog{log})
}

type clientLog struct{ log logrus.FieldLogger }

func (l clientLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debugf("redis client: "+format, v...)
}
