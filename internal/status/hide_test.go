package status

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/sirupsen/logrus"
)

// TestStatusPageHidesRepositories: with HideRepositories (config
// status.showRepositories: false) no repository name reaches the page,
// neither among the most pulled nor among the downloads in flight, and
// pulls are not counted per repository at all; the registries still show.
func TestStatusPageHidesRepositories(t *testing.T) {
	t.Parallel()
	for _, hide := range []bool{false, true} {
		p := New(Source{
			Fills: func() []Fill {
				return []Fill{{Digest: "sha256:0123456789abcdef0123", Upstream: "quay.io", Repo: "org/secret-fill", Written: 1, Size: 2, Started: time.Now()}}
			},
			Registries:       []Registry{{Host: "quay.io", Namespace: "quay.io"}},
			Version:          "test",
			HideRepositories: hide,
		})
		mirror := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			logx.InfoFrom(r.Context()).SetRoute("docker.io", "team/secret-pull", "v1")
		})
		quiet := logrus.New()
		quiet.SetOutput(io.Discard)
		logx.AccessLog(quiet, p.Track(mirror)).ServeHTTP(httptest.NewRecorder(),
			httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/team/secret-pull/manifests/v1", nil))
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
		req.Header.Set("Accept", "text/html")
		p.ServeHTTP(rec, req)
		page := rec.Body.String()
		shown := strings.Contains(page, "team/secret-pull") || strings.Contains(page, "org/secret-fill")
		if shown == hide {
			t.Errorf("HideRepositories %v: repository names on the page: %v\n%s", hide, shown, page)
		}
		if !strings.Contains(page, "quay.io") {
			t.Errorf("HideRepositories %v: the registry is not on the page", hide)
		}
		p.mu.Lock()
		counted := len(p.pulls)
		p.mu.Unlock()
		if hide && counted != 0 {
			t.Errorf("HideRepositories: %d repositories counted; want none kept", counted)
		}
	}
}
