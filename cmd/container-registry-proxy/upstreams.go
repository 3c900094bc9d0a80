package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/sirupsen/logrus"
)

// upstreams are the registries the proxy serves: one client each, the
// credentials they share (swapped on reload) and who may read what
// (guard, swapped on reload).
type upstreams struct {
	tokens  *auth.TokenCache
	keys    *auth.SwapSource
	guard   *auth.Guard
	clients map[string]*upstream.Registry // canonical host → client
	regs    []config.Registry
	// started is the keychain at start, for the start-up log.
	started *auth.Keychain
	obs     upstream.Observer
	// out is what every client's connections know of the proxy itself:
	// its listeners (never dialled) and its Via marker.
	out outbound
}

// outbound is the proxy's own side of its upstream connections: the
// listeners they must never reach (filled in once they are bound) and the
// Via marker by which a request that comes back is recognised.
type outbound struct {
	self *netguard.Self
	loop *netguard.Loop
}

// newTokens is the token cache every upstream client shares.
func newTokens(cfg *config.Config) *auth.TokenCache {
	return auth.NewTokenCache(&http.Client{Timeout: time.Duration(cfg.Upstream.ReadTimeout)}, auth.TokenOptions{})
}

// newUpstreams builds the credentials, a client per registry (sharing
// tokens, reporting to obs) and the access policy of cfg.
func newUpstreams(cfg *config.Config, tokens *auth.TokenCache, obs upstream.Observer, out outbound) (*upstreams, error) {
	u := &upstreams{tokens: tokens, clients: map[string]*upstream.Registry{}, regs: cfg.Upstreams(), obs: obs, out: out}
	kc, err := newKeychain(cfg)
	if err != nil {
		return nil, &configError{err}
	}
	u.keys, u.started = auth.NewSwapSource(kc), kc
	for _, rc := range u.regs {
		opts := clientOptions(cfg, rc, u)
		if opts.AllowNetworks, err = allowNetworks(cfg, rc); err != nil {
			return nil, &configError{err}
		}
		client, err := upstream.New(opts)
		if err != nil {
			return nil, &configError{fmt.Errorf("registries[%s]: %w", rc.Host, err)}
		}
		u.clients[oci.CanonicalHost(rc.Host)] = client
	}
	policy, err := buildPolicy(cfg, kc, u.clients)
	if err != nil {
		return nil, &configError{err}
	}
	u.guard = auth.NewGuard(policy, cfg.AllowOwnAuth)
	u.guard.LimitLogins(cfg.ClientAuth.MaxFailedLogins, 0)
	return u, nil
}

// clientOptions are the upstream client options of registry rc.
func clientOptions(cfg *config.Config, rc config.Registry, u *upstreams) upstream.Options {
	return upstream.Options{
		Host:           rc.Host,
		Endpoint:       rc.Endpoint,
		CAFile:         rc.CAFile,
		Insecure:       rc.Insecure || !cfg.Upstream.VerifySSL,
		Credentials:    auth.Credentials{Username: rc.Username, Password: rc.Password},
		TokenRealms:    rc.TokenRealms,
		ForceHTTP11:    cfg.Upstream.ForceHTTP11,
		ConnectTimeout: time.Duration(cfg.Upstream.ConnectTimeout),
		ReadTimeout:    time.Duration(cfg.Upstream.ReadTimeout),
		SendTimeout:    time.Duration(cfg.Upstream.SendTimeout),
		UserAgent:      "container-registry-proxy/" + Version,
		Tokens:         u.tokens,
		Keychain:       u.keys,
		Log:            logx.From,
		Observer:       u.obs,
		Self:           u.out.self,
		Loop:           u.out.loop,
	}
}

// allowNetworks are the internal networks registry rc's redirect hops and
// token realms may reach: upstream.allowNetworks and its own.
func allowNetworks(cfg *config.Config, rc config.Registry) ([]netip.Prefix, error) {
	all, err := netguard.ParseNetworks(cfg.Upstream.AllowNetworks)
	if err != nil {
		return nil, fmt.Errorf("upstream.allowNetworks: %w", err)
	}
	own, err := netguard.ParseNetworks(rc.AllowNetworks)
	if err != nil {
		return nil, fmt.Errorf("registries[%s].allowNetworks: %w", rc.Host, err)
	}
	return append(all, own...), nil
}

// mirrorRegistries are the registries as the mirror serves them.
func (u *upstreams) mirrorRegistries() []mirror.Registry {
	var out []mirror.Registry
	for _, rc := range u.regs {
		out = append(out, mirror.Registry{Host: rc.Host, Namespace: rc.Namespace, Client: u.clients[oci.CanonicalHost(rc.Host)]})
	}
	return out
}

// logServed names every served registry, its paths, whether credentials
// are injected and its access mode.
func (u *upstreams) logServed(cfg *config.Config, log *logrus.Logger) {
	for _, rc := range u.regs {
		host := oci.CanonicalHost(rc.Host)
		log.WithFields(logrus.Fields{
			"upstream":    rc.Host,
			"endpoint":    u.clients[host].Endpoint(),
			"paths":       fmt.Sprintf("/v2/%s/<repo>/… or /v2/<repo>/…?ns=%s", rc.Namespace, url.QueryEscape(rc.Host)),
			"credentials": u.started.Covers(rc.Host),
			"access":      u.guard.Policy().Mode(host).String(),
		}).Info("serving registry")
	}
	if cfg.DockerHub {
		log.Info("Docker Hub is the default upstream: /v2/<repo>/… without a registry prefix (dockerd registry-mirrors)")
	}
}

// newKeychain gathers the upstream credentials: registries[] entries,
// AUTH_REGISTRIES and the Docker config.
func newKeychain(cfg *config.Config) (*auth.Keychain, error) {
	var ko auth.KeychainOptions
	for _, r := range cfg.Upstreams() {
		if r.Username != "" {
			ko.Entries = append(ko.Entries, auth.Entry{Host: r.Host, Username: r.Username, Password: r.Password, PasswordFile: r.PasswordFile})
		}
	}
	for _, e := range cfg.AuthRegistries {
		ko.Entries = append(ko.Entries, auth.Entry{Host: e.Host, Username: e.Username, Password: e.Password})
	}
	ko.DockerConfig = cfg.DockerConfig
	kc, err := auth.NewKeychain(ko)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	return kc, nil
}

// buildPolicy sets every registry's access mode: its own access.mode;
// else, with injected credentials, defaultAccessMode (authenticated by
// default, so a private image fetched with our credentials is never handed
// to just anyone); else public.
func buildPolicy(cfg *config.Config, kc *auth.Keychain, clients map[string]*upstream.Registry) (*auth.Policy, error) {
	var users *auth.Htpasswd
	if cfg.ClientAuth.Htpasswd != "" {
		var err error
		if users, err = auth.LoadHtpasswd(cfg.ClientAuth.Htpasswd); err != nil {
			return nil, fmt.Errorf("clientAuth.htpasswd: %w", err)
		}
	}
	regs := map[string]auth.RegistryAccess{}
	for _, rc := range cfg.Upstreams() {
		ra, err := registryAccess(cfg, kc, rc, users != nil)
		if err != nil {
			return nil, err
		}
		if ra.Mode == auth.Upstream {
			ra.Check = clients[oci.CanonicalHost(rc.Host)].CheckAccess
		}
		regs[oci.CanonicalHost(rc.Host)] = ra
	}
	p, err := auth.NewPolicy(auth.PolicyOptions{Users: users, Registries: regs, CheckTTL: time.Duration(cfg.ClientAuth.UpstreamCheckTTL)})
	if errors.Is(err, auth.ErrNoUsers) {
		err = fmt.Errorf("clientAuth.htpasswd: %w", err)
	}
	return p, err
}

// registryAccess is registry rc's access mode and users.
func registryAccess(cfg *config.Config, kc *auth.Keychain, rc config.Registry, haveUsers bool) (auth.RegistryAccess, error) {
	mode, err := auth.ParseMode(rc.Access.Mode, auth.Public)
	if err != nil {
		return auth.RegistryAccess{}, fmt.Errorf("registries[%s].access.mode: %w", rc.Host, err)
	}
	if rc.Access.Mode == "" && kc.Covers(rc.Host) {
		mode, _ = auth.ParseMode(cfg.DefaultAccessMode, auth.Authenticated) //nolint:errcheck // config validated defaultAccessMode
		if mode == auth.Authenticated && !haveUsers {
			return auth.RegistryAccess{}, fmt.Errorf("registries[%s]: the proxy injects credentials towards this registry, so its cached images are served to proxy users only (access mode authenticated), and there are none: set HTPASSWD (--htpasswd, clientAuth.htpasswd); or DEFAULT_ACCESS_MODE=upstream to require clients' own registry credentials; or DEFAULT_ACCESS_MODE=public (access.mode: public) to serve them to anyone who reaches the proxy, as the nginx proxy did", rc.Host)
		}
	}
	return auth.RegistryAccess{Mode: mode, Users: rc.Access.Users}, nil
}
