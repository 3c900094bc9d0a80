package mirror

import "github.com/gmarcy/container-registry-proxy/oci"

// TagListingsWaiting returns how many requests share the upstream tag
// listing of repo on the registry host now (tests: to know that
// concurrent requests overlap one listing before it ends).
func (m *Mirror) TagListingsWaiting(host, repo string) int {
	return m.tagLists.Waiting(tagListKey(target{reg: &Registry{Host: oci.CanonicalHost(host)}, repo: repo}))
}
