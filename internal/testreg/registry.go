package testreg

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage driver registration
)

// AuthMode selects how the registry's front handler authenticates clients.
type AuthMode int

const (
	// AuthNone lets every request through, like a public registry.
	AuthNone AuthMode = iota
	// AuthBasic demands HTTP Basic credentials (Username/Password) on /v2/.
	AuthBasic
	// AuthToken demands Bearer tokens from the registry's own token server.
	AuthToken
)

// Service is the Bearer token "service" the token server expects and the
// challenge names.
const Service = "testreg"

// Options configure one test registry. The zero value is a plain-HTTP,
// anonymous registry.
type Options struct {
	// TLS serves the registry, its token server and CDN over HTTPS with a
	// certificate from a CA made for this Registry (see CAFile, CAPool).
	TLS bool
	// Auth chooses None, Basic or Token authentication.
	Auth AuthMode
	// Username and Password are the only accepted Basic credentials (for
	// AuthBasic: on /v2/; for AuthToken: at the token server, where an empty
	// Username allows anonymous tokens). AuthBasic defaults them to
	// "testuser"/"testpassword".
	Username, Password string
	// RealmHost, when set, serves the token endpoint on a listener of its
	// own, on a 127.0.0.1 port, and puts this host name into the realm URL
	// (it is added to the certificate). By default the token endpoint is
	// /token on the registry's own listener (realm "<URL>/token"): a realm
	// on a loopback IP at another port is on no registrable domain, so the
	// proxy (and crane) accept it only when configured as a token realm.
	RealmHost string
	// TokenTTL is the expires_in of issued tokens in seconds; default 300.
	TokenTTL int
	// Names are extra DNS names or IPs for the server certificate.
	Names []string
	// BlobRedirect answers blob GETs with 307 to a second loopback server
	// (the "CDN") that serves the bytes without needing credentials.
	BlobRedirect bool
	// RedirectBlob, when set, is asked for every blob GET and HEAD that
	// passed authentication (method, request path); a non-empty answer is
	// sent as a 307 Location, anywhere — a hostile registry steering its
	// clients to internal addresses or back to themselves. Empty: the
	// usual answer.
	RedirectBlob func(method, path string) string
	// DisableHTTP2 serves HTTPS with HTTP/1.1 only (default: h2 and 1.1).
	DisableHTTP2 bool
	// Headers, when set, is called for every /v2/ request of the front
	// handler and its headers are added to the answer, e.g. Docker Hub's
	// Ratelimit-Limit and Ratelimit-Remaining; a test may change what it
	// returns between requests. Nil adds none.
	Headers func() http.Header
	// CanonicalManifestDigest answers manifest GETs by a digest of another
	// algorithm (sha512) with Docker-Content-Digest naming the manifest's
	// sha256 digest, the registry's canonical one, as distribution already
	// does for blobs. By default distribution echoes the digest asked for.
	CanonicalManifestDigest bool
}

// Registry is a running distribution v3 registry behind a counting,
// authenticating, fault-injecting front handler on a loopback port.
type Registry struct {
	// URL is the registry's base URL, e.g. "https://127.0.0.1:PORT".
	URL string
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string
	// CAFile is the path of the test CA certificate (PEM); empty without TLS.
	CAFile string
	// CAPool trusts the test CA; nil without TLS.
	CAPool *x509.CertPool
	// TokenURL is the token realm (URL+"/token", or
	// "<scheme>://<RealmHost>:PORT/token"); empty unless Auth is AuthToken.
	TokenURL string
	// CDNURL is the base URL of the blob CDN; empty unless BlobRedirect.
	CDNURL string

	opts    Options
	app     *handlers.App
	inner   *httptest.Server // unauthenticated, uncounted, fault-free: for pushes
	root    string           // distribution's filesystem storage
	servers []*server        // front first; token and CDN when enabled
	scheme  string

	counts  counter
	tokens  tokenStore
	faults  faultState
	cdnAuth atomic.Bool
	closed  chan struct{}
	once    sync.Once
}

// Start runs a registry for the life of the test (closed by t.Cleanup).
// distribution's logs are discarded (TESTREG_DEBUG=1 sends them to stderr).
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	opts = opts.withDefaults()
	r := &Registry{opts: opts, scheme: "http", closed: make(chan struct{})}
	r.tokens.ttl = opts.TokenTTL
	r.faults.init()

	baseContext := r.startInner(t.TempDir())
	var tlsConfig *tls.Config
	if opts.TLS {
		var err error
		if tlsConfig, err = r.setupTLS(t.TempDir()); err != nil {
			r.Close()
			t.Fatal(err)
		}
	}
	front, token, cdn := r.newServers(tlsConfig, baseContext)
	t.Cleanup(r.Close)
	if err := r.startAll(); err != nil {
		t.Fatal(err)
	}
	r.setURLs(front, token, cdn)
	return r
}

// withDefaults fills in the Basic credentials and the token TTL.
func (opts Options) withDefaults() Options {
	if opts.Auth == AuthBasic && opts.Username == "" {
		opts.Username, opts.Password = "testuser", "testpassword"
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 300
	}
	return opts
}

// storageConfig is distribution's configuration: filesystem storage under
// root, no redirects, no upload purging, deletes allowed, quiet logs.
func storageConfig(root string) *configuration.Configuration {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": root},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
			"redirect":    configuration.Parameters{"disable": true},
			"delete":      configuration.Parameters{"enabled": true},
		},
	}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	return cfg
}

// startInner starts distribution's app on storage under root behind the
// inner server, and returns the base context every server of r uses.
func (r *Registry) startInner(root string) func(net.Listener) context.Context {
	r.root = root
	cfg := storageConfig(root)
	baseCtx := logContext{Context: context.Background(), entry: newLogEntry()}
	baseContext := func(net.Listener) context.Context { return baseCtx }
	r.app = handlers.NewApp(baseCtx, cfg)
	r.inner = httptest.NewUnstartedServer(r.app)
	r.inner.Config.BaseContext = baseContext
	r.inner.Start()
	return baseContext
}

// setupTLS makes the test CA (in dir) for the registry's names, sets
// CAFile, CAPool and the https scheme, and returns the servers' TLS config.
func (r *Registry) setupTLS(dir string) (*tls.Config, error) {
	names := append([]string{"127.0.0.1"}, r.opts.Names...)
	if r.opts.RealmHost != "" {
		names = append(names, r.opts.RealmHost)
	}
	ca, err := newTestCA(dir, names)
	if err != nil {
		return nil, err
	}
	r.CAFile, r.CAPool = ca.caFile, ca.pool
	r.scheme = "https"
	return ca.serverConfig(), nil
}

// newServers adds the front server, and the token server and CDN when the
// options ask for them (nil otherwise), to r.servers, unstarted.
func (r *Registry) newServers(tlsConfig *tls.Config, baseContext func(net.Listener) context.Context) (front, token, cdn *server) {
	newServer := func(h http.Handler) *server {
		s := &server{handler: h, tlsConfig: tlsConfig, http1Only: r.opts.DisableHTTP2, baseContext: baseContext}
		r.servers = append(r.servers, s)
		return s
	}
	front = newServer(http.HandlerFunc(r.serveFront))
	if r.opts.Auth == AuthToken && r.opts.RealmHost != "" {
		token = newServer(http.HandlerFunc(r.serveToken))
	}
	if r.opts.BlobRedirect {
		cdn = newServer(http.HandlerFunc(r.serveCDN))
	}
	return front, token, cdn
}

// setURLs sets Host, URL, TokenURL and CDNURL from the started servers.
func (r *Registry) setURLs(front, token, cdn *server) {
	r.Host = front.hostPort()
	r.URL = r.scheme + "://" + r.Host
	switch {
	case token != nil:
		_, port, _ := net.SplitHostPort(token.hostPort())
		r.TokenURL = r.scheme + "://" + net.JoinHostPort(r.opts.RealmHost, port) + "/token"
	case r.opts.Auth == AuthToken:
		r.TokenURL = r.URL + "/token"
	}
	if cdn != nil {
		r.CDNURL = r.scheme + "://" + cdn.hostPort()
	}
}

// startAll starts every listener (on its previous port after a Stop).
func (r *Registry) startAll() error {
	for _, s := range r.servers {
		if err := s.start(); err != nil {
			return err
		}
	}
	return nil
}

// Stop closes the registry's listeners (front, token server, CDN) and open
// connections, so new connections are refused: "upstream is down". Content
// and the push helpers stay available.
func (r *Registry) Stop() {
	for _, s := range r.servers {
		s.stop()
	}
}

// Restart listens again on the same ports after Stop, serving the same
// content. It fails the test if a port was taken in the meantime.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	if err := r.startAll(); err != nil {
		t.Fatal(err)
	}
}

// Close stops everything and releases parked blob requests; t.Cleanup calls
// it, calling it again is harmless.
func (r *Registry) Close() {
	r.once.Do(func() {
		close(r.closed)
		r.Stop()
		if r.inner != nil {
			r.inner.Close()
		}
		if r.app != nil {
			_ = r.app.Shutdown()
		}
	})
}

// Client returns an HTTP client that trusts the registry's test CA and does
// not share connections with other clients.
func (r *Registry) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if r.CAPool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.CAPool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}
}

// Ref returns "HOST/repo:tag" (or "HOST/repo@digest" when ref is a
// digest), the reference a client pulls directly from this registry.
func (r *Registry) Ref(repo, ref string) string {
	if strings.HasPrefix(ref, "sha256:") || strings.HasPrefix(ref, "sha512:") {
		return r.Host + "/" + repo + "@" + ref
	}
	return r.Host + "/" + repo + ":" + ref
}
