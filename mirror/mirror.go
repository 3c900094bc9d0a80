package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/flight"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gorilla/mux"
)

// Cache statuses reported in X-Cache and on the access line.
const (
	CacheHit         = "HIT"
	CacheMiss        = "MISS"
	CacheStale       = "STALE"
	CacheRevalidated = "REVALIDATED"
	CachePass        = "PASS"
)

// Registry is one upstream the mirror serves.
type Registry struct {
	// Host is the upstream's canonical host ("docker.io", "quay.io",
	// "registry.local:5000").
	Host string
	// Namespace is its path alias and storage key ("registry.local_5000").
	Namespace string
	// Client talks to the upstream.
	Client Upstream
}

// Options tunes a Mirror. Zero values take the defaults noted.
type Options struct {
	// TagTTL returns how long a tag record is used without asking
	// upstream; 0 means revalidate on every request. Default: always 0.
	TagTTL func(tag string) time.Duration
	// FillTimeout bounds one blob download from upstream. Default 30m.
	FillTimeout time.Duration
	// ManifestTimeout bounds manifest, tag and link requests to upstream
	// made on behalf of possibly many clients. Default 2m.
	ManifestTimeout time.Duration
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
	// Access decides who may read what. Default: everyone reads
	// everything.
	Access Access
	// Cache is the cache lifecycle (size bound, index, access times,
	// pins). Default: everything is kept, nothing recorded.
	Cache Cache
	// Fetcher decides where fills get their bytes. Default: from
	// upstream.
	Fetcher Fetcher
	// Observer is told about answers, fills and upstream bytes (metrics).
	// Default: nobody.
	Observer Observer
	// Redirect answers a GET of a stored blob (a hit), once the client's
	// access and the repository's link are checked, with 307 to a URL of
	// the storage itself (storage.Store.RedirectURL: a presigned URL of
	// the bucket), so that the bytes go from the bucket to the client.
	// Misses and fills, HEADs and replicas asking for a blob are answered
	// as without it, and so is a hit when the driver has no redirects or
	// cannot make the URL (logged once per interval). Default false.
	Redirect bool
	// RateLimitMinRemaining postpones the revalidation of cached tags of
	// an upstream whose last ratelimit-remaining (see RateLimited) is
	// below it, until the window resets: those tags are answered stale.
	// 0 never postpones.
	RateLimitMinRemaining int64
	// DownHold is how long cached tags of an upstream whose revalidation
	// just failed with a temporary error (refused, reset, timed out, 5xx
	// after retries) are answered stale without asking it again. Without
	// it every pull during an outage waits for the retries (or the full
	// timeout of a hanging upstream) before its stale answer. 0 means
	// DefaultDownHold, negative never holds.
	DownHold time.Duration
	// RevalidateWait bounds how long a request for a cached tag (or
	// referrers index) waits for its revalidation upstream: past it the
	// cached copy is answered stale (a Warning says why) and the
	// revalidation finishes in the background, one per record, so that a
	// hanging upstream does not hold pulls for its whole timeout. A miss
	// still waits for upstream. 0 means DefaultRevalidateWait, negative
	// waits as long as upstream takes (up to its timeouts).
	RevalidateWait time.Duration
	// TagListMaxBytes bounds the bytes one tags/list reads from upstream
	// over all its pages, TagListMaxTags the tags it gathers: a list past
	// either is answered 502 and not stored. 0 means
	// DefaultTagListMaxBytes and DefaultTagListMaxTags.
	TagListMaxBytes int64
	TagListMaxTags  int
	// MaxFills bounds the blob downloads in flight (fills), all upstreams
	// together, and MaxFillsPerUpstream those from one upstream: a
	// request that would start one more is answered 503 with Retry-After
	// (joining a download in flight and hits never are). 0 means
	// DefaultMaxFills and DefaultMaxFillsPerUpstream, negative no bound.
	MaxFills, MaxFillsPerUpstream int
}

// DefaultDownHold is Options.DownHold's default.
const DefaultDownHold = 10 * time.Second

// Defaults of Options.MaxFills and Options.MaxFillsPerUpstream.
const (
	DefaultMaxFills            = 256
	DefaultMaxFillsPerUpstream = 64
)

// Mirror is the pull-through registry. It is an http.Handler.
type Mirror struct {
	store  *storage.Store
	opts   Options
	router *mux.Router

	byName    map[string]*Registry // canonical host and namespace → registry
	registers []*Registry

	// manifests and links share upstream lookups among concurrent
	// requests (internal/flight: detached, bounded by ManifestTimeout).
	manifests *flight.Group[*manifest]
	links     *flight.Group[struct{}]
	// tagLists shares one upstream listing per repository (listing.go).
	tagLists *flight.Group[[]string]
	// listingSlots bounds the upstream listings of different
	// repositories running at once (maxListings); listingsQueued counts
	// those waiting for a slot.
	listingSlots   chan struct{}
	listingsQueued atomic.Int64

	mu sync.Mutex
	// fills are the fills in flight, by upstream namespace and digest: a
	// client only ever reads bytes from the upstream it asked for.
	fills map[fillKey]*fill
	// perUpstream counts the fill goroutines of each upstream namespace
	// (Options.MaxFillsPerUpstream).
	perUpstream map[string]int
	// running counts fill goroutines, so that a shutdown can let them
	// end; idle is closed (and replaced) whenever it drops to zero. Both
	// are guarded by mu: a counter, not a WaitGroup, because fills may
	// start while Drain waits.
	running int
	idle    chan struct{}
	// commits orders the commits of one digest (fills of it from several
	// upstreams): the first stores the blob, the others link it.
	commits [16]sync.Mutex
	// purging orders a purge of a fill in flight (a blob deleted through
	// the shim) and the fill's commit: see purge.go.
	purging sync.RWMutex

	errMu     sync.Mutex
	errLogged map[string]time.Time // disk error cause → last logged

	// rates holds the rate-limit windows that postpone tag revalidation.
	rates rateGate
	// outages holds the upstreams left alone after a failed revalidation
	// or after they asked to wait.
	outages outageGate
	// revals runs revalidations of cached records, in the background
	// once they outlast RevalidateWait.
	revals revalidations

	// abandoned is closed by Abandon: every fill then ends.
	abandoned   chan struct{}
	abandonOnce sync.Once
}

// Abandon cancels every fill in flight and every fill started later: each
// removes its upload (nothing partial is kept) and cuts its waiting
// clients short. It is for a shutdown whose grace period is over; Drain
// then waits for the fills to end.
// Revalidations running in the background are cancelled too.
func (m *Mirror) Abandon() {
	m.abandonOnce.Do(func() { close(m.abandoned) })
	m.revals.stop()
}

// Drain waits until every fill in flight has ended (committed or
// abandoned), or ctx is done: a graceful shutdown does not throw away a
// download that clients already received. Fills that start meanwhile are
// waited for too. Revalidations running in the background (no client
// waits for them) are cancelled, not waited for: the next pull asks
// upstream again.
func (m *Mirror) Drain(ctx context.Context) error {
	if err := m.revals.drain(ctx, true); err != nil {
		return err
	}
	for {
		m.mu.Lock()
		n, idle := m.running, m.idle
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("%d fills still running: %w", n, ctx.Err())
		}
	}
}

// fillStarted and fillEnded count fill goroutines, in all and of the
// upstream namespace ns; m.mu is held by the caller of fillStarted.
func (m *Mirror) fillStarted(ns string) {
	m.running++
	m.perUpstream[ns]++
}

func (m *Mirror) fillEnded(ns string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perUpstream[ns]--; m.perUpstream[ns] == 0 {
		delete(m.perUpstream, ns)
	}
	if m.running--; m.running == 0 {
		close(m.idle)
		m.idle = make(chan struct{})
	}
}

// New returns a Mirror serving registries from store.
func New(store *storage.Store, registries []Registry, opts Options) (*Mirror, error) {
	if store == nil {
		return nil, errors.New("mirror: nil store")
	}
	setDefaults(&opts)
	m := &Mirror{store: store, opts: opts, byName: map[string]*Registry{}, fills: map[fillKey]*fill{}, perUpstream: map[string]int{},
		errLogged: map[string]time.Time{}, abandoned: make(chan struct{}), idle: make(chan struct{}),
		manifests: flight.New[*manifest](opts.ManifestTimeout), links: flight.New[struct{}](opts.ManifestTimeout),
		tagLists: flight.New[[]string](opts.ManifestTimeout), listingSlots: make(chan struct{}, maxListings)}
	for i := range registries {
		r := registries[i]
		if r.Client == nil {
			return nil, fmt.Errorf("mirror: registry %q has no client", r.Host)
		}
		r.Host = oci.CanonicalHost(r.Host)
		if r.Namespace == "" {
			r.Namespace = oci.NamespaceFor(r.Host)
		}
		r.Client = &heldUpstream{Upstream: r.Client, m: m, host: r.Host}
		if strings.ContainsAny(r.Namespace, ":/") {
			return nil, fmt.Errorf("mirror: registry %q: namespace %q may not contain ':' or '/'", r.Host, r.Namespace)
		}
		for _, name := range []string{r.Host, r.Namespace} {
			if prev, dup := m.byName[name]; dup && prev.Host != r.Host {
				return nil, fmt.Errorf("mirror: registries %q and %q share the name %q", prev.Host, r.Host, name)
			}
			m.byName[name] = &r
		}
		m.registers = append(m.registers, &r)
	}
	m.router = m.routes()
	return m, nil
}

// setDefaults fills the unset Options with their defaults.
func setDefaults(opts *Options) {
	if opts.TagTTL == nil {
		opts.TagTTL = func(string) time.Duration { return 0 }
	}
	if opts.FillTimeout <= 0 {
		opts.FillTimeout = 30 * time.Minute
	}
	if opts.ManifestTimeout <= 0 {
		opts.ManifestTimeout = 2 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DownHold == 0 {
		opts.DownHold = DefaultDownHold
	}
	if opts.RevalidateWait == 0 {
		opts.RevalidateWait = DefaultRevalidateWait
	}
	opts.MaxFills, opts.MaxFillsPerUpstream = orDefault(opts.MaxFills, DefaultMaxFills), orDefault(opts.MaxFillsPerUpstream, DefaultMaxFillsPerUpstream)
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	tagListDefaults(opts)
	if opts.Access == nil {
		opts.Access = open{}
	}
	if opts.Cache == nil {
		opts.Cache = unbounded{}
	}
	if opts.Fetcher == nil {
		opts.Fetcher = fromUpstream{}
	}
}

// orDefault is n, or def when n is 0.
func orDefault(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// Registries returns the served upstreams with their path prefixes.
func (m *Mirror) Registries() []Registry {
	out := make([]Registry, 0, len(m.registers))
	for _, r := range m.registers {
		out = append(out, *r)
	}
	return out
}

// lookup implements oci.Lookup over the configured registries.
func (m *Mirror) lookup(name string) (string, bool) {
	if r, ok := m.byName[name]; ok {
		return r.Host, true
	}
	if r, ok := m.byName[oci.CanonicalHost(name)]; ok {
		return r.Host, true
	}
	return "", false
}

// ServeHTTP implements http.Handler.
func (m *Mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	m.router.ServeHTTP(w, r)
}

// handlerFunc is a handler that returns its error; serve turns it into an
// OCI error response.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (m *Mirror) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	})
}

// writeError logs err and sends it as an OCI error envelope.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, _ := oci.EnvelopeFor(err)
	log := logx.From(r.Context()).WithError(err).WithField(logx.FieldStatus, status)
	if status >= 500 {
		log.Warn("request failed")
	} else {
		log.Debug("request refused")
	}
	oci.WriteError(w, r, err)
}

// detached returns a context for a fill, shared by several clients: it
// keeps the values of ctx (logging) but not its cancellation, bounded by d.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// leftErr maps the error of a shared lookup that the caller left (its
// request context ended while it waited) to clientGone; other errors pass
// unchanged.
func leftErr(ctx context.Context, err error) error {
	if err != nil && flight.Left(ctx, err) {
		return clientGone(err)
	}
	return err
}

// clientGone is the error of a request whose client went away while it
// waited (a shared lookup, a fill's bytes or its commit).
func clientGone(cause error) error {
	return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, cause, "client went away")
}

// authorize applies Options.Access to r and returns r with the context to
// use, or the denial (logged with the client's identity and repository).
func (m *Mirror) authorize(r *http.Request, t target, kind, ref string) (*http.Request, error) {
	ctx, identity, err := m.opts.Access.Authorize(r, t.reg.Host, t.repo, kind, ref)
	if identity != "" {
		logx.InfoFrom(r.Context()).Set("client", identity)
	}
	if err != nil {
		logx.From(r.Context()).WithFields(map[string]any{"client": identity, logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo}).
			WithError(err).Info("access denied")
		return r, err
	}
	return r.WithContext(ctx), nil
}

// setCache records the cache status on the response and the access line.
func setCache(w http.ResponseWriter, r *http.Request, status string) {
	w.Header().Set("X-Cache", status)
	logx.InfoFrom(r.Context()).SetCache(status)
}
