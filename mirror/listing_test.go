package mirror_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestTagsListName: tags/list answers with the name the client asked for,
// in its body and its Link header: the mirror path's
// registry.test_5000/team/app, ?ns='s team/app, and team/app for a
// request the shim rewrote (its Host names the registry).
func TestTagsListName(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	for _, tag := range []string{"a", "b", "c"} {
		reg.PushImage(t, "team/app", tag)
	}
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test:5000", reg: reg})
	cases := []struct {
		door, path, host, name, link string
	}{
		{"mirror path", "/v2/registry.test_5000/team/app/tags/list?n=1", "",
			"registry.test_5000/team/app", `</v2/registry.test_5000/team/app/tags/list?last=a&n=1>; rel="next"`},
		{"mirror path by host", "/v2/registry.test:5000/team/app/tags/list?n=1", "",
			"registry.test:5000/team/app", `</v2/registry.test:5000/team/app/tags/list?last=a&n=1>; rel="next"`},
		{"ns", "/v2/team/app/tags/list?n=1&ns=registry.test:5000", "",
			"team/app", `</v2/team/app/tags/list?last=a&n=1&ns=registry.test%3A5000>; rel="next"`},
		{"shim", "/v2/registry.test_5000/team/app/tags/list?n=1", "registry.test:5000",
			"team/app", `</v2/team/app/tags/list?last=a&n=1>; rel="next"`},
	}
	for _, tc := range cases {
		t.Run(tc.door, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var l struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%d: %v", resp.StatusCode, err)
			}
			if l.Name != tc.name || len(l.Tags) != 1 || l.Tags[0] != "a" {
				t.Errorf("name %q tags %v, want %q [a]", l.Name, l.Tags, tc.name)
			}
			if got := resp.Header.Get("Link"); got != tc.link {
				t.Errorf("Link = %s, want %s", got, tc.link)
			}
		})
	}
}
