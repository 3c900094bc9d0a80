package mirror

import (
	"net/http"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
)

// namePat matches a repository path (possibly prefixed by a registry host
// or alias) in a route; the handlers validate it.
const namePat = `{name:(?:[^/]+/)*[^/]+}`

func (m *Mirror) routes() *mux.Router {
	r := mux.NewRouter()
	r.SkipClean(true)
	read := []string{http.MethodGet, http.MethodHead}

	r.Handle("/v2/", m.serve(m.handleBase)).Methods(read...)
	r.Handle("/v2", m.serve(m.handleBase)).Methods(read...)
	r.Handle("/v2/"+namePat+"/manifests/{reference}", m.serve(m.handleManifest)).Methods(read...)
	r.Handle("/v2/"+namePat+"/blobs/{digest}", m.serve(m.handleBlob)).Methods(read...)
	r.Handle("/v2/"+namePat+"/tags/list", m.serve(m.handleTags)).Methods(read...)
	r.Handle("/v2/"+namePat+"/referrers/{digest}", m.serve(m.handleReferrers)).Methods(read...)
	// Everything else under /v2/ that writes is a push.
	r.PathPrefix("/v2/").Handler(m.serve(m.handleOther))
	r.NotFoundHandler = m.serve(func(w http.ResponseWriter, r *http.Request) error {
		return oci.Errorf(http.StatusNotFound, oci.CodeUnsupported, "not a registry API path: %s", r.URL.Path)
	})
	r.MethodNotAllowedHandler = m.serve(m.handleOther)
	return r
}

func (m *Mirror) handleBase(w http.ResponseWriter, r *http.Request) error {
	if err := m.opts.Access.AuthorizeBase(r); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

func (m *Mirror) handleOther(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return oci.Errorf(http.StatusNotFound, oci.CodeUnsupported, "unsupported registry API path: %s", r.URL.Path)
	default:
		// The push passthrough is the shim's (HTTPS_PROXY); the mirror's
		// own paths are a pull-through cache whatever the proxy allows.
		return oci.Errorf(http.StatusMethodNotAllowed, oci.CodeUnsupported,
			"this registry mirror serves pulls only: %s is refused here", r.Method)
	}
}

// target is a request resolved to a registry and repository.
type target struct {
	reg  *Registry
	repo string
	// name is the repository path as the client wrote it (for Link headers).
	name string
}

// resolve maps the request's name and ?ns= to a target.
func (m *Mirror) resolve(r *http.Request) (target, error) {
	name := mux.Vars(r)["name"]
	route, err := oci.Resolve(name, r.URL.Query().Get("ns"), m.lookup)
	if err != nil {
		return target{}, err
	}
	reg := m.byName[route.Upstream]
	return target{reg: reg, repo: route.Repo, name: name}, nil
}

// resolveDigest resolves a request for {digest} of a repository (blobs,
// referrers) and records its route for the access line.
func (m *Mirror) resolveDigest(r *http.Request) (target, digest.Digest, error) {
	t, err := m.resolve(r)
	if err != nil {
		return target{}, "", err
	}
	d, err := oci.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return target{}, "", err
	}
	setRoute(r, t, d.String())
	return t, d, nil
}

func setRoute(r *http.Request, t target, ref string) {
	logx.InfoFrom(r.Context()).SetRoute(t.reg.Host, t.repo, ref)
}
