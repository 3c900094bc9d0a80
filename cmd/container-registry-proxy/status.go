package main

import (
	"context"

	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/status"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// newStatusPage builds the page served at GET / to browsers.
func newStatusPage(cfg *config.Config, m *mirror.Mirror, life *cache.Lifecycle, mt *metrics.Metrics, c *replicas) *status.Page {
	var regs []status.Registry
	hub := false
	byNS := map[string]string{}
	for _, r := range m.Registries() {
		byNS[r.Namespace] = r.Host
		if r.Host == oci.DockerHub {
			hub = true
			continue
		}
		regs = append(regs, status.Registry{Host: r.Host, Namespace: r.Namespace})
	}
	return status.New(status.Source{
		Gatherer: mt.Registry(),
		Fills: func() []status.Fill {
			var out []status.Fill
			for _, f := range m.Fills() {
				out = append(out, status.Fill{Digest: f.Digest, Upstream: byNS[f.Namespace], Repo: f.Repo,
					Written: f.Written, Size: f.Size, Clients: f.Clients, Started: f.Started, Source: f.Source, ForPeer: f.ForPeer})
			}
			return out
		},
		Members:    c.memberList(),
		Self:       cfg.Cluster.Advertise,
		Usage:      func(ctx context.Context) (int64, int64, error) { return life.Usage(ctx) },
		MaxSize:    int64(cfg.Cache.MaxSize),
		Registries: regs,
		DockerHub:  hub && cfg.DockerHub,
		Version:    Version,
		Banner:     "container-registry-proxy " + Version + ": caching proxy for container images; pull through /v2/\n",

		HideRepositories: !cfg.Status.ShowRepositories,
	})
}
