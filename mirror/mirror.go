package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
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
	// Access decides whether the client of r may read repo of the
	// registry host (kind "manifest", "blob", "tags" or "referrers"; ref a
	// tag or digest). It returns the context for upstream requests made
	// for this client, the client's identity for logs, and nil or an OCI
	// error (401 with a challenge, 403). Nil lets everyone read.
	Access func(r *http.Request, host, repo, kind, ref string) (context.Context, string, error)
	// Base decides the registry base endpoint (/v2/) for r; nil answers
	// 200 to everyone.
	Base func(r *http.Request) error
	// Keep says whether a blob of size bytes may be stored at all (not
	// larger than the whole cache); nil keeps everything.
	Keep func(size int64) bool
	// BeforeCommit runs in a fill after the bytes were verified and
	// before they are committed, to make room for size more bytes (never
	// on a hit path).
	BeforeCommit func(ctx context.Context, size int64)
	// OnCommit is told about every blob and manifest committed to the
	// cache (the index records it and eviction may run).
	OnCommit func(ctx context.Context, c Committed)
	// OnLink is told when a repository is found to contain a blob that
	// was already cached.
	OnLink func(ctx context.Context, d digest.Digest, namespace, repo string)
	// OnHit is told about every read of a cached blob or manifest (access
	// times for eviction); it must not block.
	OnHit func(d digest.Digest)
	// Observer is told about answers, fills and upstream bytes (metrics).
	// Default: nobody.
	Observer Observer
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
}

// DefaultDownHold is Options.DownHold's default.
const DefaultDownHold = 10 * time.Second

// Committed describes content just committed to the cache.
type Committed struct {
	Digest    digest.Digest
	Size      int64
	MediaType string // manifests only
	// Body is the manifest's content (manifests only), for the index to
	// record which blobs it references.
	Body      []byte
	Namespace string
	Repo      string
}

// Pinned reports whether d is being filled or served right now: eviction
// must not remove it.
func (m *Mirror) Pinned(d digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fills[d.String()] != nil || m.serving[d.String()] > 0
}

func (m *Mirror) pin(d digest.Digest) func() {
	m.mu.Lock()
	m.serving[d.String()]++
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		if m.serving[d.String()]--; m.serving[d.String()] <= 0 {
			delete(m.serving, d.String())
		}
		m.mu.Unlock()
	}
}

// Mirror is the pull-through registry. It is an http.Handler.
type Mirror struct {
	store  *storage.Store
	opts   Options
	router *mux.Router

	byName    map[string]*Registry // canonical host and namespace → registry
	registers []*Registry

	flight singleflight.Group // manifests, tags, links

	mu    sync.Mutex
	fills map[string]*fill // digest → fill in flight
	// running counts fill goroutines, so that a shutdown can let them end.
	running sync.WaitGroup

	errMu     sync.Mutex
	errLogged map[string]time.Time // disk error cause → last logged

	// serving counts hits being sent per digest, so eviction skips them.
	serving map[string]int

	// rates holds the rate-limit windows that postpone tag revalidation.
	rates rateGate
	// outages holds the upstreams left alone after a failed revalidation.
	outages outageGate

	// abandoned is closed by Abandon: every fill then ends.
	abandoned   chan struct{}
	abandonOnce sync.Once
}

// Abandon cancels every fill in flight and every fill started later: each
// removes its upload (nothing partial is kept) and cuts its waiting
// clients short. It is for a shutdown whose grace period is over; Drain
// then waits for the fills to end.
func (m *Mirror) Abandon() { m.abandonOnce.Do(func() { close(m.abandoned) }) }

// Drain waits until every fill in flight has ended (committed or
// abandoned), or ctx is done: a graceful shutdown does not throw away a
// download that clients already received.
func (m *Mirror) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { m.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fills still running: %w", ctx.Err())
	}
}

// New returns a Mirror serving registries from store.
func New(store *storage.Store, registries []Registry, opts Options) (*Mirror, error) {
	if store == nil {
		return nil, errors.New("mirror: nil store")
	}
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
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	m := &Mirror{store: store, opts: opts, byName: map[string]*Registry{}, fills: map[string]*fill{},
		errLogged: map[string]time.Time{}, serving: map[string]int{}, abandoned: make(chan struct{})}
	for i := range registries {
		r := registries[i]
		if r.Client == nil {
			return nil, fmt.Errorf("mirror: registry %q has no client", r.Host)
		}
		r.Host = oci.CanonicalHost(r.Host)
		if r.Namespace == "" {
			r.Namespace = oci.NamespaceFor(r.Host)
		}
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

// writeError sends err as an OCI error envelope and logs it.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := oci.EnvelopeFor(err)
	log := logx.From(r.Context()).WithError(err).WithField(logx.FieldStatus, status)
	switch {
	case status >= 500:
		log.Warn("request failed")
	default:
		log.Debug("request refused")
	}
	var oe *oci.Error
	if errors.As(err, &oe) && oe.RetryAfter != "" {
		w.Header().Set("Retry-After", oe.RetryAfter)
	}
	if status == http.StatusUnauthorized {
		// Every 401 invites credentials, so that clients send theirs (to
		// the proxy, or upstream with ALLOW_OWN_AUTH).
		challenge := `Basic realm="container-registry-proxy"`
		if oe != nil && oe.Challenge != "" {
			challenge = oe.Challenge
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// detached returns a context for work shared by several clients: it keeps
// the values of ctx (logging) but not its cancellation, bounded by d.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// authorize applies Options.Access to r and returns r with the context to
// use, or the denial (logged with the client's identity and repository).
func (m *Mirror) authorize(r *http.Request, t target, kind, ref string) (*http.Request, error) {
	if m.opts.Access == nil {
		return r, nil
	}
	ctx, identity, err := m.opts.Access(r, t.reg.Host, t.repo, kind, ref)
	logx.InfoFrom(r.Context()).Set("client", identity)
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

// ForgetTag drops the cached record of a tag (after a push through the
// shim changed or deleted it), so the next pull asks upstream. host is a
// registry host or alias, ref a tag (digests are immutable and ignored).
func (m *Mirror) ForgetTag(ctx context.Context, host, repo, ref string) error {
	if !oci.ValidTag(ref) {
		return nil
	}
	route, err := oci.Resolve(repo, host, m.lookup)
	if err != nil {
		return err
	}
	reg := m.byName[route.Upstream]
	if err := m.store.DeleteTag(ctx, reg.Namespace, route.Repo, ref); err != nil {
		return fmt.Errorf("forget tag %s/%s:%s: %w", reg.Host, route.Repo, ref, err)
	}
	logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: reg.Host, logx.FieldRepo: route.Repo, logx.FieldRef: ref}).
		Info("tag changed by a push; cached record dropped")
	return nil
}
