package upstream

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// FuzzResponseError: whatever error answer an upstream sends (status and
// body), the client gets a status and OCI code the proxy chose, and the
// message and the error text (logged) hold at most a bounded, printable
// part of upstream's code and message: no control characters, valid
// UTF-8, nothing beyond maxMessage of upstream's words.
func FuzzResponseError(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
	}{
		{404, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`},
		{404, `{"errors":[{"code":"name_unknown","message":"repository name not known to registry"}]}`},
		{401, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository"}]}]}`},
		{403, `{"errors":[]}`}, {429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`},
		{500, `<html>oops</html>`}, {418, `{"errors":[{"code":"TEAPOT","message":"short and stout"}]}`}, {302, ``},
		{400, `{"errors":[{"code":"DIGEST_INVALID","message":"` + strings.Repeat("é", 300) + `"}]}`},
		{400, `{"errors":[{"code":"x","message":"line\r\nX-Injected: 1\u001b[31m"}]}`},
		// Found by this target: upstream's code went unbounded and raw
		// into the logged error text; a message cut at 256 bytes could
		// end in half a character; C1 controls and line separators
		// passed.
		{400, `{"errors":[{"code":"` + strings.Repeat("A", 60000) + `","message":"m"}]}`},
		{400, `{"errors":[{"code":"BAD\nLOG LINE","message":"m"}]}`},
		{400, `{"errors":[{"code":"x","message":"` + strings.Repeat("a", 255) + `€"}]}`},
		{400, `{"errors":[{"code":"x","message":"a\u0085b\u2028c\u009b31m"}]}`},
	} {
		f.Add(seed.status, []byte(seed.body), false)
	}
	r := &Registry{host: "reg.test", now: time.Now}
	f.Fuzz(func(t *testing.T, status int, body []byte, blob bool) {
		if status < 100 || status > 999 {
			status = 400 + (status%200+200)%200
		}
		k := kindManifest
		if blob {
			k = kindBlob
		}
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v2/library/a/manifests/latest"}}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), Request: req}
		e := r.responseError(resp, k)
		checkStatusAndCode(t, status, e)
		for what, s := range map[string]string{"message": e.Message, "error": e.Error()} {
			if !printable(s) {
				t.Fatalf("status %d, body %q: the %s %q is not printable text", status, body, what, s)
			}
		}
		if len(e.Message) > len("upstream reg.test: ")+maxMessage+len("…") {
			t.Fatalf("a message of %d bytes", len(e.Message))
		}
		if len(e.Error()) > 2*maxMessage+200 {
			t.Fatalf("an error text of %d bytes", len(e.Error()))
		}
		_, env := oci.EnvelopeFor(e)
		var got oci.Envelope
		if err := json.Unmarshal(env, &got); err != nil || len(got.Errors) != 1 || got.Errors[0].Code != e.Code {
			t.Fatalf("envelope %s: %v", env, err)
		}
	})
}

// checkStatusAndCode asserts that the client's status and code are the
// proxy's mapping of upstream's status, with a code of the OCI spec.
func checkStatusAndCode(t *testing.T, status int, e *oci.Error) {
	t.Helper()
	want := status
	switch {
	case status >= 500, status < 400:
		want = http.StatusBadGateway
	}
	if e.Status != want {
		t.Fatalf("upstream %d: status %d, want %d", status, e.Status, want)
	}
	if !standardCodes[e.Code] && e.Code != oci.CodeUnavailable {
		t.Fatalf("upstream %d: code %q", status, e.Code)
	}
}

// printable reports whether s is valid UTF-8 without control characters
// (C0, DEL, C1) or line and paragraph separators.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
	})
}
