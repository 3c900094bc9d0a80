package upstream

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Defaults applied by New (the nginx proxy's PROXY_*_TIMEOUT defaults).
const (
	DefaultTimeout   = 60 * time.Second
	DefaultUserAgent = "container-registry-proxy"
	// maxRedirects bounds a redirect chain (registry → CDN → …).
	maxRedirects = 10
)

// Options configures one upstream Registry.
type Options struct {
	// Host is the canonical upstream name, e.g. "docker.io" or
	// "registry.test:25443" (see oci.CanonicalHost). Required.
	Host string
	// Endpoint is the URL to connect to, optionally with a path prefix.
	// Default "https://"+Host; Docker Hub uses https://registry-1.docker.io.
	Endpoint string
	// CAFile is a PEM bundle trusted in addition to the system roots
	// (which honour SSL_CERT_FILE).
	CAFile string
	// Insecure skips TLS certificate verification for this upstream. The
	// zero value verifies.
	Insecure bool
	// Credentials are the static credentials used towards the registry
	// and its token realm when Keychain has none for them.
	Credentials auth.Credentials
	// Keychain supplies credentials by host: the token realm's host first
	// (Bearer), then Host, then the endpoint's host (see auth.Transport).
	// Optional; typically one *auth.Keychain shared by every registry.
	Keychain auth.Source
	// TokenRealms lists extra hosts allowed as Bearer token realms
	// besides the registry's own domain.
	TokenRealms []string
	// AllowNetworks are internal networks (private, loopback, …: see
	// internal/netguard) that redirect hops and token realms may reach,
	// e.g. blob storage on a private network. Without them only the
	// endpoint's own address, at its port, is internal and reachable.
	AllowNetworks []netip.Prefix
	// Self are the proxy's own listeners: never reached, whatever
	// AllowNetworks or the endpoint say. Nil: none known.
	Self *netguard.Self
	// Loop, when set, marks every request with the proxy's Via entry, so
	// a request that comes back to the proxy is recognised.
	Loop *netguard.Loop
	// ForceHTTP11 disables HTTP/2 (FORCE_UPSTREAM_HTTP_1_1).
	ForceHTTP11 bool
	// ConnectTimeout bounds the TCP connect and TLS handshake;
	// ReadTimeout the wait for response headers and the silence between
	// two reads of a body; SendTimeout the silence between two writes.
	// Zero means DefaultTimeout.
	ConnectTimeout, ReadTimeout, SendTimeout time.Duration
	// UserAgent is sent with every request (default DefaultUserAgent).
	UserAgent string
	// Tokens is a token cache to share between registries; New makes one
	// when nil.
	Tokens *auth.TokenCache
	// Log returns the logger for a request's context (e.g. the
	// request-scoped entry); default the standard logger.
	Log func(context.Context) *logrus.Entry
	// Observer is told about every request sent upstream and every
	// rate-limit report (metrics); nil: nobody.
	Observer Observer
	// Now is the clock that stamps rate-limit reports. Default time.Now.
	Now func() time.Time
}

// Registry is one upstream registry: its endpoint and the HTTP client stack
// that talks to it. It implements the mirror's Upstream interface and is
// safe for concurrent use.
type Registry struct {
	host     string
	endpoint *url.URL
	ua       string
	client   *http.Client
	retry    *retryTransport // its backoff is shortened by tests

	obs Observer
	now func() time.Time

	mu                     sync.Mutex
	rateLimit, rateRemains string
	rateSeen               time.Time
}

// New validates opts, applies defaults and builds the client stack.
func New(opts Options) (*Registry, error) {
	if opts.Host == "" || !oci.ValidHost(opts.Host) {
		return nil, fmt.Errorf("%w: invalid host %q", ErrInvalidOptions, opts.Host)
	}
	ep, err := parseEndpoint(opts.Host, opts.Endpoint)
	if err != nil {
		return nil, err
	}
	setDefaults(&opts)
	ht, err := newHTTPTransport(opts, ep)
	if err != nil {
		return nil, err
	}
	retry, at := newStack(opts, ep, ht)
	return &Registry{
		host:     opts.Host,
		endpoint: ep,
		ua:       opts.UserAgent,
		client:   &http.Client{Transport: at, CheckRedirect: checkRedirect},
		retry:    retry,
		obs:      opts.Observer,
		now:      opts.Now,
	}, nil
}

// parseEndpoint validates the endpoint of upstream host ("" for the
// default: https://host, Docker Hub's API host for Docker Hub) and drops
// a trailing slash from its path.
func parseEndpoint(host, endpoint string) (*url.URL, error) {
	if endpoint == "" {
		endpoint = "https://" + host
		if oci.IsDockerHub(host) {
			endpoint = "https://" + oci.DockerHubAPI
		}
	}
	ep, err := url.Parse(endpoint)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: upstream %s: endpoint %q: %w", ErrInvalidOptions, host, endpoint, err)
	case ep.Scheme != "http" && ep.Scheme != "https":
		return nil, fmt.Errorf("%w: upstream %s: endpoint %q: scheme must be http or https", ErrInvalidOptions, host, endpoint)
	case ep.Host == "":
		return nil, fmt.Errorf("%w: upstream %s: endpoint %q has no host", ErrInvalidOptions, host, endpoint)
	case ep.User != nil:
		return nil, fmt.Errorf("%w: upstream %s: endpoint must not contain credentials (give them as the upstream's credentials)", ErrInvalidOptions, host)
	case ep.RawQuery != "" || ep.Fragment != "":
		return nil, fmt.Errorf("%w: upstream %s: endpoint %q must not have a query or fragment", ErrInvalidOptions, host, endpoint)
	}
	ep.Path = strings.TrimSuffix(ep.Path, "/")
	ep.RawPath = ""
	return ep, nil
}

// setDefaults fills the optional fields of opts that are unset.
func setDefaults(opts *Options) {
	for _, d := range []*time.Duration{&opts.ConnectTimeout, &opts.ReadTimeout, &opts.SendTimeout} {
		if *d <= 0 {
			*d = DefaultTimeout
		}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	if opts.Log == nil {
		std := logrus.NewEntry(logrus.StandardLogger())
		opts.Log = func(context.Context) *logrus.Entry { return std }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
}

// newStack builds the round-tripper stack over ht, bottom up: Via (when
// there is a Loop) → observe (when there is an Observer) → logging → retry → auth. Token requests go
// through retry and below, not through auth. It returns the retry layer
// and the top.
func newStack(opts Options, ep *url.URL, ht *http.Transport) (*retryTransport, *auth.Transport) {
	var bottom http.RoundTripper = ht
	if opts.Loop != nil {
		bottom = &viaTransport{base: bottom, loop: opts.Loop}
	}
	if opts.Observer != nil {
		bottom = &observeTransport{base: bottom, upstream: opts.Host, obs: opts.Observer}
	}
	logged := &logTransport{base: bottom, upstream: opts.Host, log: opts.Log}
	retry := &retryTransport{base: logged, backoff: defaultBackoff[:]}
	tokenClient := &http.Client{Transport: retry, CheckRedirect: checkRedirect}
	if opts.Tokens == nil {
		opts.Tokens = auth.NewTokenCache(tokenClient, auth.TokenOptions{UserAgent: opts.UserAgent})
	}
	return retry, &auth.Transport{
		Base:        retry,
		Host:        ep.Host,
		Registry:    opts.Host,
		Keychain:    opts.Keychain,
		Credentials: opts.Credentials,
		Tokens:      opts.Tokens,
		TokenClient: tokenClient,
		AllowRealm:  auth.RealmAllowed(opts.Host, ep.Scheme+"://"+ep.Host, opts.TokenRealms),
	}
}

// checkRedirect follows at most maxRedirects redirects. The auth
// transport adds credentials only for the registry host, so hops to blob
// storage go without them.
func checkRedirect(_ *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return ErrTooManyRedirects
	}
	return nil
}

// Endpoint returns the endpoint URL requests are sent to.
func (r *Registry) Endpoint() string { return r.endpoint.String() }

// Manifest fetches /v2/<repo>/manifests/<ref> with the full Accept set;
// with head it sends HEAD and returns a nil body. The caller bounds and
// closes the body.
func (r *Registry) Manifest(ctx context.Context, repo, ref string, head bool) (oci.Descriptor, io.ReadCloser, error) {
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	resp, err := r.do(ctx, method, r.url(repo, "manifests/"+ref, nil), oci.ManifestAccept)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return oci.Descriptor{}, nil, r.responseError(resp, kindManifest)
	}
	desc := descriptorOf(resp)
	if head {
		resp.Body.Close()
		return desc, nil, nil
	}
	return desc, &body{ReadCloser: resp.Body, r: r}, nil
}

// Blob opens /v2/<repo>/blobs/<dgst>, following redirects to blob storage
// without the registry's credentials. size is -1 when unknown.
func (r *Registry) Blob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := r.do(ctx, http.MethodGet, r.url(repo, "blobs/"+dgst.String(), nil), "")
	if err != nil {
		return nil, -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, -1, r.responseError(resp, kindBlob)
	}
	return &body{ReadCloser: resp.Body, r: r}, sizeOf(resp), nil
}

// BlobFrom opens /v2/<repo>/blobs/<dgst> from byte off on, with a Range
// request, to resume a download: the body starts at off and size is the
// whole blob's (-1 when upstream did not say). An upstream that ignores
// the range (200) has its first off bytes skipped here; one that answers
// another range than asked is an error. off 0 is Blob.
func (r *Registry) BlobFrom(ctx context.Context, repo string, dgst digest.Digest, off int64) (io.ReadCloser, int64, error) {
	if off <= 0 {
		return r.Blob(ctx, repo, dgst)
	}
	resp, err := r.doHeader(ctx, http.MethodGet, r.url(repo, "blobs/"+dgst.String(), nil), "Range", fmt.Sprintf("bytes=%d-", off))
	if err != nil {
		return nil, -1, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, _, total, ok := oci.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			resp.Body.Close()
			return nil, -1, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "upstream %s answered bytes=%d- with Content-Range %q", r.host, off, resp.Header.Get("Content-Range"))
		}
		return &body{ReadCloser: resp.Body, r: r}, total, nil
	case http.StatusOK:
		b := &body{ReadCloser: resp.Body, r: r}
		if _, err := io.CopyN(io.Discard, b, off); err != nil {
			b.Close()
			return nil, -1, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s cut the download of %s", r.host, dgst)
		}
		return b, sizeOf(resp), nil
	default:
		return nil, -1, r.responseError(resp, kindBlob)
	}
}

// StatBlob sends HEAD /v2/<repo>/blobs/<dgst> and returns the size (-1
// when upstream did not send it).
func (r *Registry) StatBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	resp, err := r.do(ctx, http.MethodHead, r.url(repo, "blobs/"+dgst.String(), nil), "")
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return -1, r.responseError(resp, kindBlob)
	}
	resp.Body.Close()
	return sizeOf(resp), nil
}

// Get sends GET /v2/<repo>/<suffix>?<query> (tags/list, referrers/…) and
// returns a 2xx response whose body the caller closes; any other status
// is an error.
func (r *Registry) Get(ctx context.Context, repo, suffix string, query url.Values) (*http.Response, error) {
	suffix = strings.TrimPrefix(suffix, "/")
	accept := ""
	if strings.HasPrefix(suffix, "referrers/") {
		accept = oci.MediaTypeOCIIndex
	}
	resp, err := r.do(ctx, http.MethodGet, r.url(repo, suffix, query), accept)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, r.responseError(resp, kindOther)
	}
	resp.Body = &body{ReadCloser: resp.Body, r: r}
	return resp, nil
}

// url builds an API URL under the endpoint (and its path prefix).
func (r *Registry) url(repo, suffix string, query url.Values) string {
	u := *r.endpoint
	u.Path = r.endpoint.Path + "/v2/" + repo + "/" + suffix
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	return u.String()
}

// do sends one request through the stack, mapping transport failures,
// and records rate-limit headers.
func (r *Registry) do(ctx context.Context, method, u, accept string) (*http.Response, error) {
	return r.doHeader(ctx, method, u, "Accept", accept)
}

// doHeader is do with one request header (none when value is empty).
func (r *Registry) doHeader(ctx context.Context, method, u, name, value string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, oci.Wrap(http.StatusBadRequest, oci.CodeNameInvalid, err, "invalid upstream request path")
	}
	req.Header.Set("User-Agent", r.ua)
	if value != "" {
		req.Header.Set(name, value)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, r.transportError(err)
	}
	r.noteRateLimit(resp.Header)
	return resp, nil
}

// noteRateLimit keeps the last rate-limit headers seen.
func (r *Registry) noteRateLimit(h http.Header) {
	limit, remaining := h.Get("Ratelimit-Limit"), h.Get("Ratelimit-Remaining")
	if limit == "" && remaining == "" {
		return
	}
	r.mu.Lock()
	r.rateLimit, r.rateRemains, r.rateSeen = limit, remaining, r.now()
	r.mu.Unlock()
	reportRateLimit(r.obs, r.host, limit, remaining)
}

// descriptorOf reads the descriptor of a manifest answer: media type
// without parameters, Docker-Content-Digest ("" when absent) and size.
func descriptorOf(resp *http.Response) oci.Descriptor {
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return oci.Descriptor{MediaType: mt, Digest: resp.Header.Get("Docker-Content-Digest"), Size: sizeOf(resp)}
}

// sizeOf returns the body size announced by upstream, or -1.
func sizeOf(resp *http.Response) int64 {
	if resp.ContentLength >= 0 {
		return resp.ContentLength
	}
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		return n
	}
	return -1
}
