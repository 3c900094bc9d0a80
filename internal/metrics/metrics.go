package metrics

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names. Other parts of the proxy (the status page) and users'
// dashboards depend on them: they are documented in docs/metrics.md and
// must not change.
const (
	NameRequests           = "crp_requests_total"
	NameServedBytes        = "crp_served_bytes_total"
	NameUpstreamBytes      = "crp_upstream_bytes_total"
	NameUpstreamRequests   = "crp_upstream_requests_total"
	NameFillsInFlight      = "crp_fills_in_flight"
	NameFillDuration       = "crp_fill_duration_seconds"
	NameDigestMismatches   = "crp_digest_mismatches_total"
	NameEvictions          = "crp_evictions_total"
	NameEvictedBytes       = "crp_evicted_bytes_total"
	NameCacheBytes         = "crp_cache_bytes"
	NameCacheObjects       = "crp_cache_objects"
	NameTokenRequests      = "crp_token_requests_total" //nolint:gosec // G101: a metric name that says "token", not a credential
	NameTunnelsOpen        = "crp_tunnels_open"
	NameConnects           = "crp_connect_total"
	NameRateLimitLimit     = "crp_ratelimit_limit"
	NameRateLimitRemaining = "crp_ratelimit_remaining"
	NameRateLimitPostponed = "crp_ratelimit_postponed_total"
	NameUpstreamThrottled  = "crp_upstream_throttled_total"
	NamePeerFills          = "crp_peer_fills_total"
	NameFailovers          = "crp_fill_failovers_total"
	NameLeaseLosses        = "crp_fill_lease_losses_total"
	NameRedisErrors        = "crp_redis_errors_total"
)

// Label values of crp_requests_total and crp_served_bytes_total.
const (
	KindBlob     = "blob"
	KindManifest = "manifest" // by digest
	KindTag      = "tag"      // manifest by tag

	SourceCache    = "cache"
	SourceUpstream = "upstream"
)

// kinds and cacheStatuses are the label values crp_requests_total is
// initialised with for every upstream (AddUpstream).
var (
	kinds         = [...]string{KindBlob, KindManifest, KindTag}
	cacheStatuses = [...]string{"hit", "miss", "stale", "revalidated", "pass"}
)

// Options are the sources New reads at scrape time.
type Options struct {
	// TokenRequests returns how many requests were sent to token realms
	// (auth.TokenCache.Requests); nil reports 0.
	TokenRequests func() int64
}

// Metrics is the proxy's registry and its metrics. Its methods are safe
// for concurrent use and never block: they are called on request paths.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	requests         *prometheus.CounterVec
	served           *prometheus.CounterVec
	upstreamBytes    *prometheus.CounterVec
	upstreamRequests *prometheus.CounterVec
	fillsInFlight    prometheus.Gauge
	fillDuration     *prometheus.HistogramVec
	digestMismatches *prometheus.CounterVec
	evictions        *prometheus.CounterVec
	evictedBytes     prometheus.Counter
	tunnelsOpen      prometheus.Gauge
	connects         *prometheus.CounterVec
	rateLimit        *prometheus.GaugeVec
	rateRemaining    *prometheus.GaugeVec
	postponed        *prometheus.CounterVec
	throttled        *prometheus.CounterVec
	peerFills        prometheus.Counter
	failovers        prometheus.Counter
	leaseLosses      prometheus.Counter
	redisErrors      prometheus.Counter

	usage atomic.Pointer[func() (bytes, objects int64)]
}

// New returns the metrics registered on a new registry of their own, with
// the Go and process collectors.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m.requests = counterVec(NameRequests, "Manifest and blob requests answered with content, by upstream, kind (blob, manifest by digest, tag) and cache status (hit, miss, stale, revalidated, pass).", "upstream", "kind", "cache")
	m.served = counterVec(NameServedBytes, "Manifest and blob body bytes sent to clients, by upstream and source (cache: hits, stale and revalidated answers; upstream: misses and passes).", "upstream", "source")
	m.upstreamBytes = counterVec(NameUpstreamBytes, "Blob and manifest bytes fetched from upstream.", "upstream")
	m.upstreamRequests = counterVec(NameUpstreamRequests, "HTTP requests sent to upstream registries (redirect hops and retries included), by status code or \"error\".", "upstream", "status")
	m.fillsInFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: NameFillsInFlight, Help: "Blob downloads from upstream in progress."})
	m.fillDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameFillDuration, Help: "Duration of blob fills from upstream, committed or not.", Buckets: fillBuckets()}, []string{"upstream"})
	m.digestMismatches = counterVec(NameDigestMismatches, "Upstream content that did not match its digest (nothing was cached).", "upstream")
	m.evictions = counterVec(NameEvictions, "Cache entries removed, by reason (expired, size, min-free, manifest).", "reason")
	m.evictedBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: NameEvictedBytes, Help: "Bytes removed from the cache by eviction."})
	m.tunnelsOpen = prometheus.NewGauge(prometheus.GaugeOpts{Name: NameTunnelsOpen, Help: "CONNECT tunnels open (not intercepted)."})
	m.connects = counterVec(NameConnects, "CONNECT requests by decision (intercept, tunnel, deny, bad-request, proxy-auth-failed).", "decision")
	m.rateLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameRateLimitLimit, Help: "Last ratelimit-limit header seen from upstream (requests per window)."}, []string{"upstream"})
	m.rateRemaining = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameRateLimitRemaining, Help: "Last ratelimit-remaining header seen from upstream."}, []string{"upstream"})
	m.postponed = counterVec(NameRateLimitPostponed, "Tag revalidations postponed because upstream's remaining rate limit was below rateLimit.minRemaining (answered stale).", "upstream")
	m.throttled = counterVec(NameUpstreamThrottled, "Requests answered without asking upstream because it asked to wait (429, or 503 with Retry-After): cached content stale, the rest with upstream's status and Retry-After.", "upstream")

	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m.peerFills = counter(NamePeerFills, "Blob fills streamed from another replica (the owner of the digest) instead of upstream.")
	m.failovers = counter(NameFailovers, "Blob fills resumed from another source after the replica they streamed from broke off.")
	m.leaseLosses = counter(NameLeaseLosses, "Blob fills from upstream whose lease expired or was taken over while they ran.")
	m.redisErrors = counter(NameRedisErrors, "Redis commands that could not reach Redis (the replica serves degraded meanwhile).")

	tokens := opts.TokenRequests
	if tokens == nil {
		tokens = func() int64 { return 0 }
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.served, m.upstreamBytes, m.upstreamRequests,
		m.fillsInFlight, m.fillDuration, m.digestMismatches,
		m.evictions, m.evictedBytes, newCacheCollector(m),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: NameTokenRequests, Help: "Requests sent to token realms (Bearer token flow)."},
			func() float64 { return float64(tokens()) }),
		m.tunnelsOpen, m.connects, m.rateLimit, m.rateRemaining, m.postponed, m.throttled,
		m.peerFills, m.failovers, m.leaseLosses, m.redisErrors,
	)
	for _, d := range []string{"intercept", "tunnel", "deny", "bad-request", "proxy-auth-failed"} {
		m.connects.WithLabelValues(d)
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

// Registry returns the registry every metric is registered on, for
// readers in the process (the status page gathers it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// AddUpstream creates the series of upstream at 0, so that rates and
// ratios exist before its first request.
func (m *Metrics) AddUpstream(upstream string) {
	for _, k := range kinds {
		for _, c := range cacheStatuses {
			m.requests.WithLabelValues(upstream, k, c)
		}
	}
	m.served.WithLabelValues(upstream, SourceCache)
	m.served.WithLabelValues(upstream, SourceUpstream)
	m.upstreamBytes.WithLabelValues(upstream)
	m.fillDuration.WithLabelValues(upstream)
	m.digestMismatches.WithLabelValues(upstream)
	m.postponed.WithLabelValues(upstream)
	m.throttled.WithLabelValues(upstream)
}

// SetCacheUsage sets the source of crp_cache_bytes and crp_cache_objects
// (the cache index's totals); it is read at every scrape and must be
// cheap. Before it is set both are 0.
func (m *Metrics) SetCacheUsage(usage func() (bytes, objects int64)) { m.usage.Store(&usage) }

// Answered records a manifest or blob request answered with content:
// kind is blob, manifest or tag, cache the X-Cache status (any case),
// bytes the body bytes sent.
func (m *Metrics) Answered(upstream, kind, cache string, bytes int64) {
	cache = strings.ToLower(cache)
	m.requests.WithLabelValues(upstream, kind, cache).Inc()
	if bytes > 0 {
		m.served.WithLabelValues(upstream, Source(cache)).Add(float64(bytes))
	}
}

// Source returns where the bytes of an answer with cache status cache came
// from: the cache for hits, stale and revalidated answers, upstream for
// misses and passes.
func Source(cache string) string {
	switch strings.ToLower(cache) {
	case "hit", "stale", "revalidated":
		return SourceCache
	}
	return SourceUpstream
}

// Fetched records blob or manifest bytes read from upstream.
func (m *Metrics) Fetched(upstream string, bytes int64) {
	if bytes > 0 {
		m.upstreamBytes.WithLabelValues(upstream).Add(float64(bytes))
	}
}

// FillStarted records a blob fill starting.
func (m *Metrics) FillStarted(string) { m.fillsInFlight.Inc() }

// FillEnded records a blob fill ending after d, committed or not.
func (m *Metrics) FillEnded(upstream string, d time.Duration) {
	m.fillsInFlight.Dec()
	m.fillDuration.WithLabelValues(upstream).Observe(d.Seconds())
}

// DigestMismatch records upstream content that did not match its digest.
func (m *Metrics) DigestMismatch(upstream string) {
	m.digestMismatches.WithLabelValues(upstream).Inc()
}

// Postponed records a tag revalidation postponed by the rate limit.
func (m *Metrics) Postponed(upstream string) { m.postponed.WithLabelValues(upstream).Inc() }

// Throttled records a request answered without asking upstream because
// upstream asked to wait.
func (m *Metrics) Throttled(upstream string) { m.throttled.WithLabelValues(upstream).Inc() }

// UpstreamRequest records one HTTP request sent upstream; status is the
// numeric code or "error".
func (m *Metrics) UpstreamRequest(upstream, status string) {
	m.upstreamRequests.WithLabelValues(upstream, status).Inc()
}

// RateLimit records the last rate-limit headers seen from upstream; a
// negative value was absent and leaves its gauge as it is.
func (m *Metrics) RateLimit(upstream string, limit, remaining int64) {
	if limit >= 0 {
		m.rateLimit.WithLabelValues(upstream).Set(float64(limit))
	}
	if remaining >= 0 {
		m.rateRemaining.WithLabelValues(upstream).Set(float64(remaining))
	}
}

// PeerFill counts a fill streamed from another replica (cluster.Observer).
func (m *Metrics) PeerFill() { m.peerFills.Inc() }

// Failover counts a fill resumed elsewhere (cluster.Observer).
func (m *Metrics) Failover() { m.failovers.Inc() }

// LeaseLost counts a fill that lost its lease (cluster.Observer).
func (m *Metrics) LeaseLost() { m.leaseLosses.Inc() }

// RedisError counts a Redis command that could not reach Redis.
func (m *Metrics) RedisError() { m.redisErrors.Inc() }

// Connect records a CONNECT request's decision.
func (m *Metrics) Connect(decision string) { m.connects.WithLabelValues(decision).Inc() }

// TunnelOpened records a CONNECT tunnel opening.
func (m *Metrics) TunnelOpened() { m.tunnelsOpen.Inc() }

// TunnelClosed records a CONNECT tunnel closing.
func (m *Metrics) TunnelClosed() { m.tunnelsOpen.Dec() }

// Evicted records one cache entry of bytes removed for reason.
func (m *Metrics) Evicted(reason string, bytes int64) {
	m.evictions.WithLabelValues(reason).Inc()
	m.evictedBytes.Add(float64(bytes))
}

// fillBuckets are the buckets of crp_fill_duration_seconds: 50ms doubling
// up to 409.6s (14 buckets).
func fillBuckets() []float64 { return prometheus.ExponentialBuckets(0.05, 2, 14) }

// cacheCollector reports crp_cache_bytes and crp_cache_objects from one
// call of the usage source per scrape.
type cacheCollector struct {
	m              *Metrics
	bytes, objects *prometheus.Desc
}

func newCacheCollector(m *Metrics) *cacheCollector {
	return &cacheCollector{m: m,
		bytes:   prometheus.NewDesc(NameCacheBytes, "Bytes stored in the cache (blobs and manifests), from the cache index.", nil, nil),
		objects: prometheus.NewDesc(NameCacheObjects, "Blobs and manifests stored in the cache, from the cache index.", nil, nil),
	}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.objects
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	var bytes, objects int64
	if f := c.m.usage.Load(); f != nil {
		bytes, objects = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(objects))
}
