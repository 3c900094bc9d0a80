package mirror

import "github.com/gmarcy/container-registry-proxy/oci"

// TagListingsWaiting returns how many requests share the upstream tag
// listing of repo on the registry host now (tests: to know that
// concurrent requests overlap one listing before it ends).
func (m *Mirror) TagListingsWaiting(host, repo string) int {
	return m.tagLists.Waiting(tagListKey(target{reg: &Registry{Host: oci.CanonicalHost(host)}, repo: repo}))
}

// TagListingsQueued returns how many upstream tag listings wait for one
// of the maxListings slots now.
func (m *Mirror) TagListingsQueued() int { return int(m.listingsQueued.Load()) }

// MaxListings is maxListings, for the tests outside the package.
const MaxListings = maxListings
