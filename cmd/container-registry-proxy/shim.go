package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/sirupsen/logrus"
)

// forwardRoute is where the shim sends what the mirror does not answer
// for one registry: its endpoint and a transport that verifies it.
type forwardRoute struct {
	base *url.URL
	rt   http.RoundTripper
}

// newForwardRoute builds the pass-through route to a registry endpoint.
func newForwardRoute(endpoint, caFile string, insecure bool) (forwardRoute, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return forwardRoute{}, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return forwardRoute{}, fmt.Errorf("caFile: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return forwardRoute{}, fmt.Errorf("caFile %s: no PEM certificates", caFile)
		}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}, //nolint:gosec // operator's choice
		ForceAttemptHTTP2:     true,
		ResponseHeaderTimeout: 5 * time.Minute,
		MaxIdleConnsPerHost:   16,
	}
	return forwardRoute{base: u, rt: tr}, nil
}

// buildShim loads or creates the CA and assembles the CONNECT shim in
// front of the mirror and the origin-form endpoints.
func buildShim(cfg *config.Config, log *logrus.Logger, m *mirror.Mirror, front, page http.Handler, forwards map[string]forwardRoute, policy func() *auth.Policy, gc http.Handler, obs shim.Observer) (*shim.Shim, error) {
	ca, err := shim.LoadOrCreateCA(cfg.CADir)
	if err != nil {
		return nil, &configError{fmt.Errorf("CA (--ca-dir %s): %w", cfg.CADir, err)}
	}
	log.WithField("caDir", cfg.CADir).WithField("subject", ca.Certificate().Subject.CommonName).Info("interception CA ready; clients fetch it from /ca.crt")
	minter := shim.NewMinter(ca, shim.MinterOptions{})

	namespaces := map[string]string{}
	var setupRegs []shim.SetupRegistry
	for _, r := range m.Registries() {
		namespaces[r.Host] = r.Namespace
		if r.Host != oci.DockerHub {
			setupRegs = append(setupRegs, shim.SetupRegistry{Host: r.Host, Namespace: r.Namespace})
		}
	}
	_, hub := namespaces[oci.DockerHub]
	hub = hub && cfg.DockerHub
	dockerAuth := forwardRoute{base: &url.URL{Scheme: "https", Host: "auth.docker.io"}, rt: http.DefaultTransport}
	nets, err := shim.ParseNetworks(cfg.Connect.AllowNetworks)
	if err != nil {
		return nil, &configError{fmt.Errorf("connect.allowNetworks: %w", err)}
	}
	setup := shim.SetupHandler(ca, shim.SetupOptions{Registries: setupRegs, DockerHub: hub})
	tunnel := shim.TunnelOptions{
		ConnectTimeout: time.Duration(cfg.Connect.ConnectTimeout),
		ReadTimeout:    time.Duration(cfg.Connect.ReadTimeout),
		SendTimeout:    time.Duration(cfg.Connect.SendTimeout),
		AllowNetworks:  nets,
	}
	return shim.New(front, rootHandler(front, setup, gc, page), minter, shim.Options{
		Policy: shim.Policy{
			Intercepted: func(h string) bool {
				if _, ok := namespaces[h]; ok {
					return true
				}
				return hub && h == "auth.docker.io"
			},
			AllowPorts:    cfg.Connect.AllowPorts,
			AllowNetworks: nets,
		},
		Tunnel: tunnel,
		Namespace: func(h string) (string, bool) {
			ns, ok := namespaces[h]
			return ns, ok
		},
		Forward: func(h string) (*url.URL, http.RoundTripper) {
			if fr, ok := forwards[h]; ok {
				return fr.base, fr.rt
			}
			if hub && h == "auth.docker.io" {
				return dockerAuth.base, dockerAuth.rt
			}
			return nil, nil
		},
		AllowPush:            cfg.AllowPush,
		AllowPushWithOwnAuth: cfg.AllowPushWithOwnAuth,
		RequestBuffering:     cfg.ProxyRequestBuffering,
		SpoolDir:             os.TempDir(),
		OnManifestChange: func(ctx context.Context, host, repo, ref string) {
			if err := m.ForgetTag(ctx, host, repo, ref); err != nil {
				logx.From(ctx).WithError(err).Warn("dropping the cached tag after a push")
			}
		},
		HeaderTimeout: time.Duration(cfg.Client.HeaderTimeout),
		IdleTimeout:   time.Duration(cfg.Client.KeepaliveTimeout),
		SendTimeout:   time.Duration(cfg.Client.SendTimeout),
		BodyTimeout:   time.Duration(cfg.Client.BodyTimeout),
		Logger:        log,
		ProxyAuth: func(h string) (string, bool) {
			p := policy() // the one in force: SIGHUP may swap it
			if !p.HasUsers() {
				return "", false
			}
			return p.VerifyProxyAuthorization(h)
		},
		RequireProxyAuth: cfg.ClientAuth.RequireForConnect,
		Observer:         obs,
	})
}
