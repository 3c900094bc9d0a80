package oci

import (
	"net/http"
	"strings"
)

// Route is where a mirror request goes: an upstream (by the key under
// which it is configured) and a repository inside it.
type Route struct {
	// Upstream is the canonical host of the upstream registry, e.g.
	// "docker.io", "quay.io", "registry.local:5000".
	Upstream string
	// Repo is the repository path inside the upstream, e.g. "library/alpine".
	Repo string
}

// Lookup finds a configured upstream by a name a client used: a host (as
// in ?ns= or a path element), or a path alias such as
// "registry.local_5000". It returns the canonical host and whether it is
// configured.
type Lookup func(name string) (upstream string, ok bool)

// Resolve maps a request's repository path and ?ns= value to a Route.
// Order: ns; else a first path element that is a configured alias or looks
// like a host; else Docker Hub. A host that is not configured yields 403
// DENIED naming the REGISTRIES setting; a malformed name yields 400/404.
func Resolve(name, ns string, lookup Lookup) (Route, error) {
	host, repo := "", name
	switch {
	case ns != "":
		if !ValidHost(ns) {
			return Route{}, Errorf(http.StatusBadRequest, CodeNameInvalid, "invalid ns parameter %q", ns)
		}
		host = ns
	default:
		first, rest, found := strings.Cut(name, "/")
		if found {
			if up, ok := lookup(first); ok {
				host, repo = up, rest
				break
			}
			if LooksLikeHost(first) {
				if !ValidHost(first) {
					return Route{}, Errorf(http.StatusNotFound, CodeNameInvalid, "invalid registry host %q", first)
				}
				host, repo = first, rest
				break
			}
		}
		host = DockerHub
	}
	up, ok := lookup(host)
	if !ok {
		if IsDockerHub(host) {
			return Route{}, Errorf(http.StatusForbidden, CodeDenied, "Docker Hub is not enabled on this proxy")
		}
		return Route{}, Errorf(http.StatusForbidden, CodeDenied, "registry %q is not served by this proxy", host)
	}
	if up == DockerHub && ValidRepository(repo) && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	// Checked after library/ is added: the repository asked of upstream
	// and stored is what must be valid, 255 characters at most.
	if !ValidRepository(repo) {
		return Route{}, Errorf(http.StatusNotFound, CodeNameInvalid, "invalid repository name %q", repo)
	}
	return Route{Upstream: up, Repo: repo}, nil
}
