package oci_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

func TestWriteError(t *testing.T) {
	t.Parallel()
	tooMany := oci.Errorf(http.StatusTooManyRequests, oci.CodeTooManyRequests, "slow down")
	tooMany.RetryAfter = "30"
	own := oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "send credentials")
	own.Challenge = `Bearer realm="https://auth.test/token"`
	cases := []struct {
		name                   string
		method                 string
		err                    error
		status                 int
		code, retry, challenge string
		body                   bool
	}{
		{"not found", http.MethodGet, oci.Errorf(http.StatusNotFound, oci.CodeBlobUnknown, "no blob"), 404, oci.CodeBlobUnknown, "", "", true},
		{"rate limited", http.MethodGet, tooMany, 429, oci.CodeTooManyRequests, "30", "", true},
		{"401 gets the default challenge", http.MethodGet, oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "who?"), 401, oci.CodeUnauthorized, "", oci.DefaultChallenge, true},
		{"401 keeps its own challenge", http.MethodGet, own, 401, oci.CodeUnauthorized, "", own.Challenge, true},
		{"HEAD has no body", http.MethodHead, oci.Errorf(http.StatusForbidden, oci.CodeDenied, "no"), 403, oci.CodeDenied, "", "", false},
		{"plain errors are 500 without their cause", http.MethodGet, errors.New("secret path /var/x"), 500, oci.CodeUnknown, "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			w.Header().Set("Content-Length", "123")
			w.Header().Set("Docker-Content-Digest", "sha256:abc")
			w.Header().Set("Content-Range", "bytes */100")
			r := httptest.NewRequest(tc.method, "/v2/x/blobs/sha256:abc", nil)
			if got := oci.WriteError(w, r, tc.err); got != tc.status {
				t.Fatalf("returned %d, want %d", got, tc.status)
			}
			res := w.Result()
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			h := res.Header
			if h.Get("Retry-After") != tc.retry || h.Get("WWW-Authenticate") != tc.challenge {
				t.Fatalf("Retry-After %q, WWW-Authenticate %q", h.Get("Retry-After"), h.Get("WWW-Authenticate"))
			}
			if h.Get("Docker-Content-Digest") != "" || h.Get("Content-Type") != "application/json" || h.Get("Content-Range") != "bytes */100" {
				t.Fatalf("headers: %v", h)
			}
			if !tc.body {
				if w.Body.Len() != 0 {
					t.Fatalf("HEAD answered a body")
				}
				return
			}
			var env oci.Envelope
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || len(env.Errors) != 1 || env.Errors[0].Code != tc.code {
				t.Fatalf("body %s: %v", w.Body.String(), err)
			}
			if tc.code == oci.CodeUnknown && env.Errors[0].Message != "internal error" {
				t.Fatalf("a plain error's cause reached the client: %s", w.Body.String())
			}
		})
	}
}
