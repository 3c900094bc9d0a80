package main

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/sirupsen/logrus"
)

// buildShim loads or creates the CA and assembles the CONNECT shim in
// front of the mirror, and the setup endpoints (/ca.crt, /setup/…) that
// advertise it.
func buildShim(cfg *config.Config, log *logrus.Logger, mirror http.Handler, ups *upstreams, purger shim.Purger, obs shim.Observer) (*shim.Shim, http.Handler, error) {
	ca, err := shim.LoadOrCreateCA(cfg.CADir)
	if err != nil {
		return nil, nil, &configError{fmt.Errorf("caDir (--ca-dir %s): %w", cfg.CADir, err)}
	}
	log.WithField("caDir", cfg.CADir).WithField("subject", ca.Certificate().Subject.CommonName).Info("interception CA ready; clients fetch it from /ca.crt")
	nets, err := shim.ParseNetworks(cfg.Connect.AllowNetworks)
	if err != nil {
		return nil, nil, &configError{fmt.Errorf("connect.allowNetworks: %w", err)}
	}
	var regs []shim.Registry
	var setup shim.SetupOptions
	for _, rc := range ups.regs {
		host := oci.CanonicalHost(rc.Host)
		regs = append(regs, shim.Registry{Host: host, Namespace: rc.Namespace, Endpoint: ups.clients[host].Endpoint(),
			CAFile: rc.CAFile, Insecure: rc.Insecure || !cfg.Upstream.VerifySSL})
		if host == oci.DockerHub {
			setup.DockerHub = cfg.DockerHub
		} else {
			setup.Registries = append(setup.Registries, shim.SetupRegistry{Host: host, Namespace: rc.Namespace})
		}
	}
	sh, err := shim.New(mirror, shim.NewMinter(ca, shim.MinterOptions{}), shim.Options{
		Registries: regs,
		DockerHub:  setup.DockerHub,
		Tunnel: shim.TunnelOptions{
			ConnectTimeout: time.Duration(cfg.Connect.ConnectTimeout),
			ReadTimeout:    time.Duration(cfg.Connect.ReadTimeout),
			SendTimeout:    time.Duration(cfg.Connect.SendTimeout),
			AllowPorts:     cfg.Connect.AllowPorts,
			AllowNetworks:  nets,
		},
		AllowPush:            cfg.AllowPush,
		AllowPushWithOwnAuth: cfg.AllowPushWithOwnAuth,
		PushHint:             "the proxy's operator sets ALLOW_PUSH=true (allowPush) to pass pushes to the registry",
		RequestBuffering:     cfg.ProxyRequestBuffering,
		SpoolDir:             os.TempDir(),
		Purger:               purger,
		HeaderTimeout:        time.Duration(cfg.Client.HeaderTimeout),
		IdleTimeout:          time.Duration(cfg.Client.KeepaliveTimeout),
		SendTimeout:          time.Duration(cfg.Client.SendTimeout),
		BodyTimeout:          time.Duration(cfg.Client.BodyTimeout),
		Logger:               log,
		ProxyAuth:            ups.guard,
		RequireProxyAuth:     cfg.ClientAuth.RequireForConnect,
		Observer:             obs,
	})
	if err != nil {
		return nil, nil, &configError{err}
	}
	return sh, shim.SetupHandler(ca, setup), nil
}
