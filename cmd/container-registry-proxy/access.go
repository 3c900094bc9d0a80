package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/upstream"
)

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

// hasCredentials reports whether the proxy injects credentials towards
// registry rc: its own, or an AUTH_REGISTRIES / Docker config entry for
// its host or for its token realm's host (auth.docker.io for Docker Hub,
// the parent domain for GitLab-style registries).
func hasCredentials(cfg *config.Config, kc *auth.Keychain, rc config.Registry) bool {
	host := oci.CanonicalHost(rc.Host)
	if rc.Username != "" || kc.Has(host) {
		return true
	}
	for _, e := range cfg.AuthRegistries {
		eh := strings.ToLower(e.Host)
		if eh == host || strings.HasSuffix(host, "."+eh) || (host == oci.DockerHub && eh == "auth.docker.io") {
			return true
		}
	}
	return false
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
		host := oci.CanonicalHost(rc.Host)
		mode, err := auth.ParseMode(rc.Access.Mode, auth.Public)
		if err != nil {
			return nil, fmt.Errorf("registries[%s].access.mode: %w", rc.Host, err)
		}
		if rc.Access.Mode == "" && hasCredentials(cfg, kc, rc) {
			mode, _ = auth.ParseMode(cfg.DefaultAccessMode, auth.Authenticated)
			if mode == auth.Authenticated && users == nil {
				return nil, fmt.Errorf("registries[%s]: the proxy injects credentials towards this registry, so its cached images are served to proxy users only (access mode authenticated), and there are none: set HTPASSWD (--htpasswd, clientAuth.htpasswd); or DEFAULT_ACCESS_MODE=upstream to require clients' own registry credentials; or DEFAULT_ACCESS_MODE=public (access.mode: public) to serve them to anyone who reaches the proxy, as the nginx proxy did", rc.Host)
			}
		}
		ra := auth.RegistryAccess{Mode: mode, Users: rc.Access.Users}
		if mode == auth.Upstream {
			client := clients[host]
			ra.Check = client.CheckAccess
		}
		regs[host] = ra
	}
	return auth.NewPolicy(auth.PolicyOptions{Users: users, Registries: regs, CheckTTL: time.Duration(cfg.ClientAuth.UpstreamCheckTTL)})
}
