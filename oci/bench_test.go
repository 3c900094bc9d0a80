package oci_test

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// benchLookup is the mirror's lookup: configured hosts and their path
// aliases, tried as given and then canonicalized.
func benchLookup() oci.Lookup {
	byName := map[string]string{}
	for _, h := range []string{"docker.io", "quay.io", "ghcr.io", "registry.k8s.io", "registry.local:5000"} {
		byName[h] = h
		byName[oci.NamespaceFor(h)] = h
	}
	return func(name string) (string, bool) {
		if h, ok := byName[name]; ok {
			return h, true
		}
		h, ok := byName[oci.CanonicalHost(name)]
		return h, ok
	}
}

// BenchmarkResolve measures route resolution, which every mirror request
// does first: a Docker Hub short name, a path alias, a host-looking first
// element, the ?ns= parameter, and a denied host.
func BenchmarkResolve(b *testing.B) {
	lookup := benchLookup()
	cases := []struct{ name, repo, ns string }{
		{"hub-short", "alpine", ""},
		{"hub-org", "bitnami/redis", ""},
		{"alias", "registry.local_5000/team/app/server", ""},
		{"host", "quay.io/prometheus/node-exporter", ""},
		{"ns", "kube-apiserver", "registry.k8s.io"},
		{"denied", "example.com/some/repo", ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = oci.Resolve(c.repo, c.ns, lookup)
			}
		})
	}
}
