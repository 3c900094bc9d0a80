package oci

import (
	"errors"
	"net/http"
)

// DefaultChallenge is the WWW-Authenticate header of a 401 whose Error
// names no challenge of its own: every 401 invites credentials, so that
// clients send theirs (to the proxy, or upstream with ALLOW_OWN_AUTH).
const DefaultChallenge = `Basic realm="container-registry-proxy"`

// WriteError answers err as an OCI error envelope (EnvelopeFor): the
// status, Retry-After when the Error carries one, a WWW-Authenticate
// challenge on every 401, and no body for HEAD. Headers set for content
// that is not sent (Content-Length, Docker-Content-Digest) are dropped;
// others (Content-Range of a 416) are kept. It is the one writer of error
// responses for the mirror, the shim and the root endpoints; callers log.
// It returns the status sent.
func WriteError(w http.ResponseWriter, r *http.Request, err error) int {
	status, body := EnvelopeFor(err)
	h := w.Header()
	var oe *Error
	if errors.As(err, &oe) && oe.RetryAfter != "" {
		h.Set("Retry-After", oe.RetryAfter)
	}
	if status == http.StatusUnauthorized {
		challenge := DefaultChallenge
		if oe != nil && oe.Challenge != "" {
			challenge = oe.Challenge
		}
		h.Set("WWW-Authenticate", challenge)
	}
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return status
}
