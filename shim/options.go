package shim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// dockerHubAuth is Docker Hub's token host: intercepted with Docker Hub so
// that clients keep working when its API host is intercepted, and
// forwarded to the real host.
const dockerHubAuth = "auth.docker.io"

// ErrInvalidOptions is wrapped by every error New returns about its
// arguments, so that callers can tell a configuration problem apart with
// errors.Is.
var ErrInvalidOptions = errors.New("invalid shim options")

// Registry is one registry the shim intercepts: requests for it are served
// by the mirror under its namespace, or passed through to its endpoint.
type Registry struct {
	// Host is the registry's host with an optional port ("quay.io",
	// "registry.test:5000"); Docker Hub's names fold into "docker.io".
	Host string
	// Namespace is the mirror's path alias for the registry
	// (/v2/<Namespace>/<repo>/…); empty means the host with ':' replaced
	// by '_'.
	Namespace string
	// Endpoint is the URL pass-through requests go to (pushes, token
	// realms, non-API paths); empty means https://<Host>
	// (https://registry-1.docker.io for Docker Hub).
	Endpoint string
	// CAFile names a PEM file of roots trusted for Endpoint besides the
	// system's.
	CAFile string
	// Insecure skips the verification of Endpoint's certificate.
	Insecure bool
}

// ProxyAuthenticator verifies a Proxy-Authorization header (auth.Guard
// implements it); ok is false when the header names no valid user.
type ProxyAuthenticator interface {
	ProxyUser(header string) (user string, ok bool)
}

// Purger is told what a write passed through to a registry changed, once
// the registry accepted it and before the client has its answer (the
// mirror implements it), so that the cache does not answer from what the
// registry no longer holds: a tag pushed anew or deleted (ForgetTag), a
// manifest deleted by digest (ForgetManifest: its link, the tags that
// pointed to it, its content when no other repository links it), a blob
// deleted (ForgetBlob). host is the intercepted registry's canonical host,
// repo the repository as the client wrote it.
type Purger interface {
	ForgetTag(ctx context.Context, host, repo, tag string) error
	ForgetManifest(ctx context.Context, host, repo string, d digest.Digest) error
	ForgetBlob(ctx context.Context, host, repo string, d digest.Digest) error
	// ForgetReferrers drops the referrers list of subject: a manifest
	// pushed with that subject (the registry said so in OCI-Subject).
	ForgetReferrers(ctx context.Context, host, repo string, subject digest.Digest) error
}

// Options configure a Shim. They are data and small interfaces: the shim
// builds its routes and policy from them in New.
type Options struct {
	// Registries are the registries to intercept and serve from the
	// mirror.
	Registries []Registry
	// DockerHub intercepts Docker Hub's token host auth.docker.io too and
	// forwards its requests to https://auth.docker.io; it needs a Registry
	// for docker.io.
	DockerHub bool
	// Tunnel bounds the tunnels to hosts that are not intercepted.
	Tunnel TunnelOptions
	// AllowPush lets writes pass through to the real registry.
	AllowPush bool
	// AllowPushWithOwnAuth lets writes that carry the client's own
	// Authorization pass through even without AllowPush.
	AllowPushWithOwnAuth bool
	// PushHint tells the client of a refused write how pushes are turned
	// on (the caller names its setting); empty says nothing more.
	PushHint string
	// RequestBuffering buffers a pushed body in a temporary file in
	// SpoolDir (os.TempDir() when empty) before forwarding it.
	RequestBuffering bool
	SpoolDir         string
	// Purger is told about every successful manifest PUT and manifest or
	// blob DELETE passed through, so that the cache forgets what changed.
	// Required when pushes can pass.
	Purger Purger
	// Client-side timeouts of the intercepted connections: the request
	// header, an idle connection, the silence while sending, the silence
	// between two reads of a pushed body. Zero means none.
	HeaderTimeout, IdleTimeout, SendTimeout, BodyTimeout time.Duration
	// Logger receives the access lines of intercepted requests.
	// Default: logrus's standard logger.
	Logger *logrus.Logger
	// ProxyAuth verifies Proxy-Authorization headers; nil means proxy
	// authentication is not configured.
	ProxyAuth ProxyAuthenticator
	// RequireProxyAuth answers 407 to CONNECT and absolute-form requests
	// without valid Proxy-Authorization; it needs ProxyAuth.
	RequireProxyAuth bool
	// Observer is told about CONNECT decisions and tunnels (metrics).
	// Default: nobody.
	Observer Observer
}

// hostRoute is where the requests for one intercepted host go.
type hostRoute struct {
	// namespace is the mirror's path alias; "" for a host that is no
	// registry (auth.docker.io), whose requests are all passed through.
	namespace string
	// base is the pass-through endpoint; rt verifies its certificate.
	base *url.URL
	rt   *http.Transport
}

// withDefaults returns opts with every default filled in: the one place
// where the shim's defaults live.
func withDefaults(opts Options) Options {
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if len(opts.Tunnel.AllowPorts) == 0 {
		opts.Tunnel.AllowPorts = defaultAllowPorts
	}
	return opts
}

// checkOptions reports the first inconsistency between options that are
// each valid alone.
func checkOptions(opts Options) error {
	if opts.RequireProxyAuth && opts.ProxyAuth == nil {
		return fmt.Errorf("%w: RequireProxyAuth needs a ProxyAuth to verify the credentials", ErrInvalidOptions)
	}
	if (opts.AllowPush || opts.AllowPushWithOwnAuth) && opts.Purger == nil {
		return fmt.Errorf("%w: pushes can pass through but Purger is nil: pushed tags and deleted content would keep being answered from the cache", ErrInvalidOptions)
	}
	return nil
}

// buildRoutes validates the registries and returns the route of every
// intercepted host, keyed by canonical host.
func buildRoutes(regs []Registry, dockerHub bool) (map[string]*hostRoute, error) {
	routes := make(map[string]*hostRoute, len(regs)+1)
	for _, reg := range regs {
		host, rt, err := registryRoute(reg)
		if err != nil {
			return nil, err
		}
		if routes[host] != nil {
			return nil, fmt.Errorf("%w: registry %q is listed twice", ErrInvalidOptions, host)
		}
		routes[host] = rt
	}
	if dockerHub {
		if routes[oci.DockerHub] == nil {
			return nil, fmt.Errorf("%w: DockerHub needs a registry for %s", ErrInvalidOptions, oci.DockerHub)
		}
		if routes[dockerHubAuth] != nil {
			return nil, fmt.Errorf("%w: registry %q is Docker Hub's token host", ErrInvalidOptions, dockerHubAuth)
		}
		rt, err := newRoute("", "https://"+dockerHubAuth, "", false)
		if err != nil {
			return nil, err
		}
		routes[dockerHubAuth] = rt
	}
	return routes, nil
}

// registryRoute validates one registry and returns its canonical host and
// route, with the defaults of Namespace and Endpoint filled in.
func registryRoute(reg Registry) (string, *hostRoute, error) {
	if reg.Host == "" || !oci.ValidHost(reg.Host) {
		return "", nil, fmt.Errorf("%w: invalid registry host %q", ErrInvalidOptions, reg.Host)
	}
	host := oci.CanonicalHost(reg.Host)
	ns := reg.Namespace
	if ns == "" {
		ns = oci.NamespaceFor(host)
	}
	if !oci.ValidRepository(ns) {
		return "", nil, fmt.Errorf("%w: registry %s: invalid namespace %q", ErrInvalidOptions, host, ns)
	}
	endpoint := reg.Endpoint
	if endpoint == "" {
		endpoint = "https://" + host
		if host == oci.DockerHub {
			endpoint = "https://" + oci.DockerHubAPI
		}
	}
	rt, err := newRoute(ns, endpoint, reg.CAFile, reg.Insecure)
	if err != nil {
		return "", nil, fmt.Errorf("registry %s: %w", host, err)
	}
	return host, rt, nil
}
