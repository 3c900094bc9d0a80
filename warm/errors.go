package warm

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/upstream"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Sentinel errors of this package, found with errors.Is.
var (
	// ErrInvalidOptions is wrapped by every validation error of New.
	ErrInvalidOptions = errors.New("invalid warm options")
	// ErrDigestMismatch means content the proxy sent does not hash to
	// the digest it was asked for (or announced): nothing was warmed.
	ErrDigestMismatch = errors.New("content does not match")
	// ErrSizeMismatch means a blob had another length than its
	// descriptor says.
	ErrSizeMismatch = errors.New("wrong size")
	// ErrManifestTooLarge means a manifest exceeded oci.MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
	// ErrInvalidManifest means a manifest could not be decoded, or named
	// an invalid digest.
	ErrInvalidManifest = errors.New("invalid manifest")
)

// authHint follows every 401 of the proxy: the flag that sends credentials.
const authHint = " (authenticate to the proxy with --user)"

// FetchError is a request to the proxy that failed: what was asked
// ("manifest latest", "blob sha256:…") and the *oci.Error of upstream,
// which carries the proxy's answer (an *upstream.StatusError) or the
// transport failure.
type FetchError struct {
	// What names the object asked for.
	What string
	// Proxy is the proxy's host[:port], named in transport failures.
	Proxy string
	// Err is the cause, usually an *oci.Error.
	Err error
}

// Unwrap returns the cause.
func (e *FetchError) Unwrap() error { return e.Err }

// Error says what was asked and what the proxy answered:
// "manifest latest: 404 Not Found: MANIFEST_UNKNOWN: <message>", with a
// hint on 401; or why no answer came: "manifest latest: proxy
// 127.0.0.1:3128: connection refused".
func (e *FetchError) Error() string {
	var se *upstream.StatusError
	if errors.As(e.Err, &se) {
		s := fmt.Sprintf("%s: %d %s", e.What, se.Status, http.StatusText(se.Status))
		if code := e.Code(); code != "" {
			s += ": " + code
		}
		if se.Message != "" {
			s += ": " + se.Message
		}
		if se.Status == http.StatusUnauthorized {
			s += authHint
		}
		return s
	}
	var oe *oci.Error
	if errors.As(e.Err, &oe) {
		// upstream names the endpoint "upstream <host>"; to the user of
		// warm it is the proxy.
		msg := oe.Message
		if rest, ok := strings.CutPrefix(msg, "upstream "+e.Proxy); ok {
			msg = "proxy " + e.Proxy + rest
		}
		return e.What + ": " + msg
	}
	return e.What + ": " + e.Err.Error()
}

// Code is the OCI error code of the proxy's answer (its own, else the one
// its status maps to), or "" when the proxy did not answer.
func (e *FetchError) Code() string {
	var se *upstream.StatusError
	if !errors.As(e.Err, &se) {
		return ""
	}
	if se.Code != "" {
		return se.Code
	}
	return oci.CodeOf(e.Err)
}

// PlatformError says that an index lacks some of the wanted platforms.
// The platforms it has were warmed (Warmed), or there were none (Available
// lists what the index offers).
type PlatformError struct {
	// Missing are the wanted platforms the index does not have.
	Missing []v1.Platform
	// Warmed are the platforms that were warmed.
	Warmed []string
	// Available are the index's platforms, when none was warmed.
	Available []string
}

// Short is the summary table's reason: "no manifest for linux/s390x".
func (e *PlatformError) Short() string { return "no manifest for " + joinPlatforms(e.Missing) }

// Error implements error.
func (e *PlatformError) Error() string {
	if len(e.Warmed) > 0 {
		return e.Short() + " in the index (warmed " + strings.Join(e.Warmed, ", ") + ")"
	}
	has := "none"
	if len(e.Available) > 0 {
		has = strings.Join(e.Available, ", ")
	}
	return e.Short() + " in the index (it has " + has + ")"
}
