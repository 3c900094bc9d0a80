package warm

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// answerWith warms alpine through a stand-in proxy that answers every
// request with status and body (and a Basic challenge on 401), and
// returns the result.
func answerWith(t *testing.T, status int, body string) Result {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="container-registry-proxy"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	w, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ParseReference("alpine")
	if err != nil {
		t.Fatal(err)
	}
	return w.Warm(t.Context(), ref)
}

// TestProxyErrorsShown: a failed image is reported on the error stream
// with the proxy's status, OCI code and message (and a hint to
// authenticate on 401); the summary's RESULT column shows the code.
func TestProxyErrorsShown(t *testing.T) {
	t.Parallel()
	envelope := func(code, msg string) string {
		return fmt.Sprintf(`{"errors":[{"code":%q,"message":%q}]}`, code, msg)
	}
	cases := []struct {
		name    string
		status  int
		body    string
		line    string // on the error stream
		summary string // RESULT column
	}{
		{"manifest unknown", 404, envelope("MANIFEST_UNKNOWN", "manifest unknown"),
			"failed docker.io/library/alpine:latest: manifest latest: 404 Not Found: MANIFEST_UNKNOWN: manifest unknown\n", "failed: MANIFEST_UNKNOWN"},
		{"unauthorized", 401, envelope("UNAUTHORIZED", "authentication required"),
			"failed docker.io/library/alpine:latest: manifest latest: 401 Unauthorized: UNAUTHORIZED: authentication required (authenticate to the proxy with --user)\n", "failed: UNAUTHORIZED"},
		{"denied", 403, envelope("DENIED", "registry quay.io is not configured"),
			"failed docker.io/library/alpine:latest: manifest latest: 403 Forbidden: DENIED: registry quay.io is not configured\n", "failed: DENIED"},
		{"no envelope", 404, "not here",
			"failed docker.io/library/alpine:latest: manifest latest: 404 Not Found: MANIFEST_UNKNOWN\n", "failed: MANIFEST_UNKNOWN"},
		{"rate limited", 429, envelope("TOOMANYREQUESTS", "slow down"),
			"failed docker.io/library/alpine:latest: manifest latest: 429 Too Many Requests: TOOMANYREQUESTS: slow down\n", "failed: TOOMANYREQUESTS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := answerWith(t, tc.status, tc.body)
			var fe *FetchError
			if !errors.As(r.Err, &fe) {
				t.Fatalf("Err = %v (%T), want a *FetchError", r.Err, r.Err)
			}
			var out, errOut bytes.Buffer
			o := NewOutput(&out, &errOut)
			o.Done(r)
			o.Summary([]Result{r})
			if errOut.String() != tc.line {
				t.Errorf("error stream %q\nwant         %q", errOut.String(), tc.line)
			}
			row := regexp.MustCompile(`(?m)^docker\.io/library/alpine:latest +- +0 +0 B +` + regexp.QuoteMeta(tc.summary) + `$`)
			if !row.MatchString(out.String()) || strings.Contains(out.String(), "warmed") {
				t.Errorf("summary lacks %q or reports the image as warmed:\n%s", tc.summary, out.String())
			}
		})
	}
}

// TestOutputLines: a warmed image gets one plain line with its platforms,
// blobs, bytes, time and what the proxy already had; the summary has one
// row per image in order; long reasons are cut short in the table.
func TestOutputLines(t *testing.T) {
	t.Parallel()
	ok := Result{Image: "docker.io/library/alpine:3.20", Platforms: []string{"linux/amd64"}, Blobs: 3,
		Bytes: 3_565_158, Fetched: 1, Cached: 2, Duration: 812 * time.Millisecond}
	multi := Result{Image: "docker.io/team/multi:v1", Platforms: []string{"linux/amd64", "linux/arm64/v8"}, Blobs: 4,
		Bytes: 900, Fetched: 4, Duration: 42 * time.Millisecond}
	partial := Result{Image: "docker.io/team/multi:v2", Platforms: []string{"linux/amd64"}, Blobs: 2, Bytes: 2048,
		Err: &PlatformError{Missing: []v1.Platform{{OS: "linux", Architecture: "s390x"}}, Warmed: []string{"linux/amd64"}}}
	broken := Result{Image: "quay.io/org/app:v1", Err: fmt.Errorf("blob sha256:abc: %w (got sha256:def)", ErrDigestMismatch)}
	var out, errOut bytes.Buffer
	o := NewOutput(&out, &errOut)
	for _, r := range []Result{ok, multi, partial, broken} {
		o.Done(r)
	}
	o.Summary([]Result{ok, multi, partial, broken})
	want := `warmed docker.io/library/alpine:3.20 linux/amd64: 3 blobs, 3.4 MiB in 0.8s (1 fetched, 2 already cached)
warmed docker.io/team/multi:v1 linux/amd64,linux/arm64/v8: 4 blobs, 900 B in 42ms (4 fetched, 0 already cached)
IMAGE                          PLATFORMS                   BLOBS  BYTES    RESULT
docker.io/library/alpine:3.20  linux/amd64                 3      3.4 MiB  ok
docker.io/team/multi:v1        linux/amd64,linux/arm64/v8  4      900 B    ok
docker.io/team/multi:v2        linux/amd64                 2      2.0 KiB  failed: no manifest for linux/s390x
quay.io/org/app:v1             -                           0      0 B      failed: blob sha256:abc: content does not match…
`
	if out.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), want)
	}
	wantErr := `failed docker.io/team/multi:v2: no manifest for linux/s390x in the index (warmed linux/amd64)
failed quay.io/org/app:v1: blob sha256:abc: content does not match (got sha256:def)
`
	if errOut.String() != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut.String(), wantErr)
	}
}

// TestOutputBar: on a terminal an image gets a progress bar with its
// name and size, cleared before the result line is printed.
func TestOutputBar(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	o := &Output{out: &out, errOut: &errOut, tty: true}
	o.Start("docker.io/library/alpine:3.20", 4096)
	o.Add(2048)
	o.Add(2048)
	o.Done(Result{Image: "docker.io/library/alpine:3.20", Platforms: []string{"linux/amd64"}, Blobs: 2, Bytes: 4096, Fetched: 2})
	s := out.String()
	bar := strings.Index(s, "docker.io/library/alpine:3.20")
	line := strings.Index(s, "warmed docker.io/library/alpine:3.20 linux/amd64: 2 blobs, 4.0 KiB in 0ms (2 fetched, 0 already cached)\n")
	if bar < 0 || line < 0 || bar >= line || !strings.Contains(s[:line], "4.0 KiB") || !strings.Contains(s[:line], "\033[") {
		t.Fatalf("no bar (name, size, ANSI codes) before the result line:\n%q", s)
	}
	if errOut.Len() != 0 {
		t.Errorf("error stream: %q", errOut.String())
	}
}

// TestNewValidates: New refuses what cannot work, naming it.
func TestNewValidates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, proxy string
		opts        Options
		msg         string
	}{
		{"no scheme", "127.0.0.1:3128", Options{}, "want http(s)://host:port"},
		{"ftp", "ftp://proxy", Options{}, "want http(s)://host:port"},
		{"a path", "http://proxy:3128/v2", Options{}, "want http(s)://host:port"},
		{"credentials in the URL", "http://u:p@proxy:3128", Options{}, "want http(s)://host:port"},
		{"too many jobs", "http://proxy:3128", Options{Jobs: MaxJobs + 1}, "jobs 65"},
		{"negative jobs", "http://proxy:3128", Options{Jobs: -1}, "jobs -1"},
		{"platform without arch", "http://proxy:3128", Options{Platforms: []v1.Platform{{OS: "linux"}}}, "platform"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.proxy, tc.opts)
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New(%q) error %v; want ErrInvalidOptions with %q", tc.proxy, err, tc.msg)
			}
		})
	}
	if _, err := New("http://proxy:3128/", Options{}); err != nil {
		t.Errorf("New with a trailing slash: %v", err)
	}
}
