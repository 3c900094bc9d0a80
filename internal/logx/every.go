package logx

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// FieldSuppressed counts the lines of the same cause that Every dropped
// since the last one it let through.
const FieldSuppressed = "suppressed"

// Every rate-limits a warning that may repeat once per request (a disk
// that fills, a storage that cannot be read, a process out of file
// descriptors): it returns e when no line of cause key went out through
// e's logger within interval, else an entry that logs nothing. The line
// that goes out after a quiet interval carries FieldSuppressed, the number
// of lines of that cause dropped since the previous one. Use a fixed key
// per call site and cause, never one built from request data:
//
//	logx.Every(logx.From(ctx), "cache storage unreadable", time.Minute).WithError(err).Warn("…")
//
// Each logger has its own record (SetClock sets its clock for tests); at
// most maxCauses causes are remembered per logger. For warnings and
// errors only: a dropped Fatal would still exit.
func Every(e *logrus.Entry, key string, interval time.Duration) *logrus.Entry {
	if e == nil || e.Logger == nil {
		return e
	}
	n, ok := limiterOf(e.Logger).allow(key, interval)
	if !ok {
		return silent
	}
	if n > 0 {
		return e.WithField(FieldSuppressed, n)
	}
	return e
}

// SetClock makes Every read the time of logger's lines from now (tests
// with a fake clock); nil restores time.Now.
func SetClock(logger *logrus.Logger, now func() time.Time) {
	l := limiterOf(logger)
	l.mu.Lock()
	l.now = now
	l.mu.Unlock()
}

// maxCauses bounds the causes one logger's limiter remembers: keys are
// fixed strings of call sites, so more means misuse; the record is then
// started afresh (at worst one extra line per cause).
const maxCauses = 1024

// silent is the entry of dropped lines: its logger's level lets nothing
// through, so a line costs no formatting.
var silent = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}()

// limiters holds each logger's limiter.
var limiters sync.Map // *logrus.Logger → *limiter

type limiter struct {
	mu     sync.Mutex
	now    func() time.Time
	causes map[string]*cause
}

type cause struct {
	last       time.Time // when a line last went out
	suppressed int
}

func limiterOf(logger *logrus.Logger) *limiter {
	if l, ok := limiters.Load(logger); ok {
		return l.(*limiter)
	}
	l, _ := limiters.LoadOrStore(logger, &limiter{causes: map[string]*cause{}})
	return l.(*limiter)
}

// allow reports whether a line of cause key may go out now, and how many
// were dropped since the last one.
func (l *limiter) allow(key string, interval time.Duration) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	c := l.causes[key]
	if c == nil {
		if len(l.causes) >= maxCauses {
			clear(l.causes)
		}
		l.causes[key] = &cause{last: now}
		return 0, true
	}
	if now.Sub(c.last) < interval {
		c.suppressed++
		return 0, false
	}
	n := c.suppressed
	c.last, c.suppressed = now, 0
	return n, true
}
