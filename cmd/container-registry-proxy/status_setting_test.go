package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestStatusShowRepositoriesSetting: status.showRepositories: false keeps
// the names of pulled repositories off the status page; by default they
// are listed.
func TestStatusShowRepositoriesSetting(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/private-name", "v1", testreg.RandomLayer(t, 1000))
	for _, show := range []bool{true, false} {
		t.Run(fmt.Sprint("show=", show), func(t *testing.T) {
			t.Parallel()
			addr, _, _, _ := runProxy(t, fmt.Sprintf("dockerHub: false\nstatus:\n  showRepositories: %v\nregistries:\n  - host: reg.test\n    endpoint: %s\n    caFile: %s\n", show, reg.URL, reg.CAFile))
			req, _ := http.NewRequest("GET", "http://"+addr+"/v2/reg.test/team/private-name/manifests/v1", nil)
			req.Header.Set("Accept", img.MediaType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("pull: %d", resp.StatusCode)
			}
			req, _ = http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Header.Set("Accept", "text/html")
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := strings.Contains(string(page), "team/private-name"); got != show {
				t.Fatalf("showRepositories %v: the repository name on the page: %v", show, got)
			}
			if !strings.Contains(string(page), "reg.test") {
				t.Fatalf("the registry is missing from the page")
			}
		})
	}
}
