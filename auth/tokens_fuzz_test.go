package auth

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// FuzzTokenAnswer: whatever a token realm answers with 200, the proxy
// takes a token only when the JSON names one that can go into an
// Authorization header (no space, CR, LF or NUL), keeps it for a positive
// time no longer than maxTokenLifetime, never for longer than expires_in
// says, and otherwise fails with 502 UNAVAILABLE whose message quotes
// nothing of the answer.
func FuzzTokenAnswer(f *testing.F) {
	for _, s := range []string{
		`{"token":"abc","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}`,
		`{"access_token":"abc"}`, `{"token":"","access_token":"x"}`, `{"token":"a b"}`, `{"token":"a\r\nX-Evil: 1"}`,
		`{"token":"abc","expires_in":-5}`, `{"token":"abc","expires_in":0}`, `{"token":"abc","expires_in":1e3}`,
		`{"token":"abc","issued_at":"2025-12-31T23:59:00Z","expires_in":300}`, `{"token":"abc","issued_at":"9999-12-31T23:59:59Z"}`,
		`{"token":"abc","issued_at":"1970-01-01T00:00:00Z","expires_in":60}`, `{"token":7}`, `[]`, `null`, ``, `{"token":"abc"} trailing`,
		// Found by this target: expires_in beyond 292 years overflowed
		// time.Duration into a negative lifetime (never cached: a realm
		// request per pull).
		`{"token":"abc","expires_in":9223372037}`, `{"token":"abc","expires_in":9223372036854775807}`,
		`{"token":"abc","expires_in":18446744073}`,
	} {
		f.Add([]byte(s))
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewTokenCache(nil, TokenOptions{Now: func() time.Time { return start }})
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		token, lifetime, err := c.readAnswer(resp, TokenRequest{}, "realm.test", start)
		if err != nil {
			if oci.StatusOf(err) != http.StatusBadGateway || oci.CodeOf(err) != oci.CodeUnavailable {
				t.Fatalf("answer %q: %d %s: %v", body, oci.StatusOf(err), oci.CodeOf(err), err)
			}
			msg := err.Error()
			var tr tokenResponse
			_ = json.Unmarshal(body, &tr)
			for _, secret := range []string{string(body), tr.Token, tr.AccessToken} {
				if len(secret) >= 16 && strings.Contains(msg, secret) {
					t.Fatalf("answer %q: the error quotes it: %v", body, err)
				}
			}
			if len(msg) > 200 {
				t.Fatalf("answer of %d bytes: an error of %d", len(body), len(msg))
			}
			return
		}
		var tr tokenResponse
		if json.Unmarshal(body, &tr) != nil {
			t.Fatalf("answer %q is no token JSON, yet the token %q was taken", body, token)
		}
		if token == "" || strings.ContainsAny(token, " \r\n\x00") || (token != tr.Token && token != tr.AccessToken) {
			t.Fatalf("answer %q: token %q", body, token)
		}
		if lifetime <= 0 || lifetime > maxTokenLifetime {
			t.Fatalf("answer %q: lifetime %v", body, lifetime)
		}
		if tr.ExpiresIn > 0 && lifetime > time.Duration(min(tr.ExpiresIn, int64(maxTokenLifetime/time.Second)))*time.Second {
			t.Fatalf("answer %q: lifetime %v beyond expires_in %d", body, lifetime, tr.ExpiresIn)
		}
		if m := expiryMargin(lifetime); m < 0 || m > lifetime {
			t.Fatalf("answer %q: lifetime %v, expiry margin %v", body, lifetime, m)
		}
	})
}
