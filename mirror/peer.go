package mirror

import (
	"net/http"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// PeerPath is where replicas ask each other for blobs:
// GET PeerPath<digest>?upstream=<host>&repo=<repository>, with an
// optional Range (docs/architecture.md, "Cluster").
const PeerPath = "/_cluster/blobs/"

// PeerHandler answers another replica that chose this one to fill a blob
// (it owns the digest): from the cache when stored, else from this
// replica's fill, started if none runs, which then takes its bytes from
// upstream (FillRequest.ForPeer) and fans out to the peer as to a local
// client, the last byte held until verified. A fill that itself streams
// from a peer is not offered (409): two replicas whose views of the
// members disagree never stream from each other in a loop.
//
// The caller authenticates the replica; there is no client access check
// here, the asking replica made it for its client.
func (m *Mirror) PeerHandler() http.Handler { return m.serve(m.handlePeer) }

func (m *Mirror) handlePeer(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return oci.Errorf(http.StatusMethodNotAllowed, oci.CodeUnsupported, "replicas ask for blobs with GET")
	}
	d, err := oci.ParseDigest(strings.TrimPrefix(r.URL.Path, PeerPath))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	reg := m.byName[q.Get("upstream")]
	repo := q.Get("repo")
	if reg == nil || !oci.ValidRepository(repo) {
		return oci.Errorf(http.StatusBadRequest, oci.CodeNameInvalid, "unknown upstream %q or invalid repository %q", q.Get("upstream"), repo)
	}
	t := target{reg: reg, repo: repo, name: repo}
	setRoute(r, t, d.String())
	return m.serveBlob(w, r, t, d, true)
}
