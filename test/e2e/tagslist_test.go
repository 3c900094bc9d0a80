//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTagsListName: tags/list answers with the repository name the
// client asked for, and its Link header leads to the next page through
// the same door: the mirror path (legacy.test_<port>/team/app), ?ns=
// (app, which upstream knows as library/app on docker.io) and the shim
// (team/app on the registry's own host).
func TestTagsListName(t *testing.T) {
	t.Parallel()
	requireTools(t, "oras")
	u := startReferrerUpstreams(t)
	p := startReferrerProxy(t, u, "")
	file := writeFile(t, t.TempDir(), "app.txt", "tagged")
	for _, repo := range []string{"team/app", "library/app"} {
		oras(t, nil, "push", "--plain-http", "--no-tty", u.Legacy.Host+"/"+repo+":v1,v2", file+":text/plain", "--disable-path-validation")
	}
	alias := aliasOf(t, "legacy", u.Legacy.Host)
	ns := strings.ReplaceAll(alias, ":", "_")
	direct := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil}}
	for _, door := range []struct {
		name, base, path, query, want string
		client                        *http.Client
	}{
		{"mirror path", p.URL, "/v2/" + ns + "/team/app/tags/list", "n=1", ns + "/team/app", direct},
		{"ns", p.URL, "/v2/app/tags/list", "n=1&ns=docker.io", "app", direct},
		{"shim", "https://" + alias, "/v2/team/app/tags/list", "n=1", "team/app", shimClient(t, p)},
	} {
		t.Run(door.name, func(t *testing.T) {
			name, tags, link := getTagsPage(t, door.client, door.base+door.path+"?"+door.query)
			q, _ := url.ParseQuery(door.query)
			q.Set("last", "v1")
			wantLink := "<" + strings.Replace(door.path, "/v2/"+ns+"/team/app", "/v2/"+door.want, 1) + "?" + q.Encode() + `>; rel="next"`
			if name != door.want || tags != "v1" || link != wantLink {
				t.Fatalf("first page: name %q tags %s Link %s; want %q v1 %s", name, tags, link, door.want, wantLink)
			}
			next := strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
			if name, tags, link = getTagsPage(t, door.client, door.base+next); name != door.want || tags != "v2" || link != "" {
				t.Fatalf("the Link's page: name %q tags %s Link %q; want %q v2 and no Link", name, tags, link, door.want)
			}
		})
	}
}

// shimClient reaches registries through the proxy's CONNECT shim,
// trusting its CA.
func shimClient(t *testing.T, p *proxy) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(newViaShim(t, p).CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the proxy's CA does not parse")
	}
	proxyURL, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// getTagsPage GETs one tags/list page and returns its name, its tags
// (comma-separated) and its Link header.
func getTagsPage(t *testing.T, c *http.Client, u string) (name, tags, link string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", u, resp.StatusCode, err)
	}
	return l.Name, strings.Join(l.Tags, ","), resp.Header.Get("Link")
}
