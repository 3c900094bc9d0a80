package warm

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/upstream"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Defaults applied by New.
const (
	// DefaultJobs is how many blobs of an image are read at once.
	DefaultJobs = 4
	// MaxJobs bounds Options.Jobs.
	MaxJobs = 64
	// DefaultReadTimeout bounds the wait for the proxy's answer and the
	// silence between two reads of a body: the proxy may wait for its
	// upstream before it answers.
	DefaultReadTimeout = 10 * time.Minute
	// DefaultConnectTimeout bounds connecting to the proxy.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultUserAgent is sent with every request.
	DefaultUserAgent = "container-registry-proxy-warm"
)

// Options configure a Warmer. The zero value warms linux/amd64 from
// multi-platform images, anonymously, DefaultJobs blobs at a time.
type Options struct {
	// Namespaces maps a canonical registry host to the path prefix the
	// proxy serves it under (its configured namespace). Hosts not listed
	// use oci.NamespaceFor: the host with ':' replaced by '_'.
	Namespaces map[string]string
	// Platforms are warmed from multi-platform images, in this order
	// (normalised like ParsePlatform). Default linux/amd64.
	Platforms []v1.Platform
	// AllPlatforms warms every entry of an index instead.
	AllPlatforms bool
	// Credentials are a proxy user's (clientAuth.htpasswd), sent when
	// the proxy asks for them; zero: anonymous.
	Credentials auth.Credentials
	// Jobs is how many blobs of one image are read at once, 1 to
	// MaxJobs. Default DefaultJobs.
	Jobs int
	// ReadTimeout bounds the wait for each answer of the proxy and the
	// silence between two reads of a body. Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// UserAgent is sent with every request. Default DefaultUserAgent.
	UserAgent string
	// Progress is told about every image as it is warmed; nil: nobody.
	Progress Progress
}

// Progress is told how warming goes, to show it (Output implements it).
// Add is called from several goroutines at once.
type Progress interface {
	// Start is called once an image's manifests are resolved, with the
	// total size of the blobs to read.
	Start(image string, total int64)
	// Add is called for every chunk of n blob bytes received.
	Add(n int64)
	// Done is called with every image's result.
	Done(r Result)
}

// Result is what warming one image did.
type Result struct {
	// Image is the normalised name (docker.io/library/alpine:3.20).
	Image string
	// Platforms are the platforms warmed ("linux/amd64"); empty when the
	// image failed before its manifests were resolved.
	Platforms []string
	// Blobs is the number of blobs (config and layers) the image needs;
	// Bytes the bytes read of them.
	Blobs int
	Bytes int64
	// Fetched counts the blobs the proxy fetched from upstream for this
	// run (X-Cache other than HIT); Cached those it already had.
	Fetched, Cached int
	// Duration is how long warming the image took.
	Duration time.Duration
	// Err is why the image was not (fully) warmed: a *FetchError, a
	// *PlatformError, a wrapped sentinel of this package or the
	// context's error; nil when it was.
	Err error
}

// Warmer pulls images through a proxy's mirror paths, reading every byte
// so that the proxy fills its cache. It is safe for concurrent use.
type Warmer struct {
	proxy string // host[:port], for messages
	reg   *upstream.Registry
	opts  Options
}

// New returns a Warmer for the proxy at proxyURL (http(s)://host:port),
// validating opts and applying the defaults.
func New(proxyURL string, opts Options) (*Warmer, error) {
	u, err := parseProxyURL(proxyURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if opts, err = opts.withDefaults(); err != nil {
		return nil, err
	}
	reg, err := upstream.New(upstream.Options{
		Host:           u.Host,
		Endpoint:       u.String(),
		Credentials:    opts.Credentials,
		ConnectTimeout: DefaultConnectTimeout,
		ReadTimeout:    opts.ReadTimeout,
		SendTimeout:    opts.ReadTimeout,
		UserAgent:      opts.UserAgent,
		// The proxy is the operator's own: its redirects (to its
		// bucket, storage.redirect) are followed wherever they lead.
		AllowNetworks: netguard.All,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: proxy %s: %w", ErrInvalidOptions, proxyURL, err)
	}
	return &Warmer{proxy: u.Host, reg: reg, opts: opts}, nil
}

// withDefaults checks o and fills in the defaults: the one place they
// are applied.
func (o Options) withDefaults() (Options, error) {
	if o.Jobs == 0 {
		o.Jobs = DefaultJobs
	}
	if o.Jobs < 1 || o.Jobs > MaxJobs {
		return o, fmt.Errorf("%w: jobs %d: want 1 to %d", ErrInvalidOptions, o.Jobs, MaxJobs)
	}
	wants := make([]v1.Platform, 0, len(o.Platforms))
	for _, p := range o.Platforms {
		if p.OS == "" || p.Architecture == "" {
			return o, fmt.Errorf("%w: platform %q: want os and architecture", ErrInvalidOptions, formatPlatform(p))
		}
		wants = append(wants, normalize(p))
	}
	if len(wants) == 0 {
		wants = []v1.Platform{{OS: "linux", Architecture: "amd64"}}
	}
	o.Platforms = wants
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	return o, nil
}

// parseProxyURL accepts http(s)://host[:port] with an optional trailing
// slash, and returns it without the slash.
func parseProxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("proxy URL %q: want http(s)://host:port", s)
	}
	u.Path = ""
	return u, nil
}

// repository is the proxy's path of ref's repository:
// <namespace>/<path>, e.g. "docker.io/library/alpine".
func (w *Warmer) repository(ref reference.Named) string {
	host := reference.Domain(ref)
	ns := w.opts.Namespaces[host]
	if ns == "" {
		ns = oci.NamespaceFor(host)
	}
	return ns + "/" + reference.Path(ref)
}

// WarmAll warms refs one after the other and returns their results in
// order. It stops after the image in progress when ctx is done, so the
// results may be fewer than refs.
func (w *Warmer) WarmAll(ctx context.Context, refs []reference.Named) []Result {
	results := make([]Result, 0, len(refs))
	for _, ref := range refs {
		results = append(results, w.Warm(ctx, ref))
		if ctx.Err() != nil {
			break
		}
	}
	return results
}

// Warm warms one image: it resolves its manifests, picks the wanted
// platforms of an index and reads every blob, telling Options.Progress.
func (w *Warmer) Warm(ctx context.Context, ref reference.Named) Result {
	began := time.Now()
	res := w.warm(ctx, ref)
	res.Image, res.Duration = ref.String(), time.Since(began)
	if w.opts.Progress != nil {
		w.opts.Progress.Done(res)
	}
	return res
}

// warm is Warm without the bookkeeping.
func (w *Warmer) warm(ctx context.Context, ref reference.Named) Result {
	var res Result
	repo := w.repository(ref)
	p, err := w.resolve(ctx, repo, ref)
	if err != nil {
		res.Err = err
		return res
	}
	res.Platforms, res.Blobs = p.platforms, len(p.blobs)
	var total int64
	for _, b := range p.blobs {
		total += max(b.Size, 0)
	}
	if w.opts.Progress != nil {
		w.opts.Progress.Start(ref.String(), total)
	}
	got, err := w.readBlobs(ctx, repo, p)
	res.Bytes, res.Fetched, res.Cached = got.bytes, got.fetched, got.cached
	if got.platform != "" {
		res.Platforms = []string{got.platform}
	}
	switch {
	case err != nil:
		res.Err = err
	case ctx.Err() != nil:
		res.Err = ctx.Err()
	case len(p.missing) > 0:
		res.Err = &PlatformError{Missing: p.missing, Warmed: p.platforms}
	}
	return res
}
