package testreg

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// puller is a minimal registry client for the tests: Basic credentials when
// configured, and the Bearer token flow done by hand.
type puller struct {
	t     *testing.T
	reg   *Registry
	c     *http.Client
	user  string
	pass  string
	token string
}

func newPuller(t *testing.T, reg *Registry, user, pass string) *puller {
	return &puller{t: t, reg: reg, c: reg.Client(), user: user, pass: pass}
}

// get GETs path on the registry, answering one Bearer challenge; it returns
// the final response and its body.
func (p *puller) get(path string, accept ...string) (*http.Response, []byte) {
	p.t.Helper()
	resp, body := p.once(http.MethodGet, path, accept)
	if resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
		p.token = p.fetchToken(resp.Header.Get("WWW-Authenticate"))
		resp, body = p.once(http.MethodGet, path, accept)
	}
	return resp, body
}

func (p *puller) once(method, path string, accept []string) (*http.Response, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.reg.URL+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	switch {
	case p.token != "":
		req.Header.Set("Authorization", "Bearer "+p.token)
	case p.user != "" && p.reg.opts.Auth == AuthBasic:
		req.SetBasicAuth(p.user, p.pass)
	}
	resp, err := p.c.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, body
}

// fetchToken follows a Bearer challenge to the realm.
func (p *puller) fetchToken(challenge string) string {
	p.t.Helper()
	params := parseChallenge(challenge)
	u, err := url.Parse(params["realm"])
	if err != nil {
		p.t.Fatal(err)
	}
	q := u.Query()
	q.Set("service", params["service"])
	if s := params["scope"]; s != "" {
		q.Set("scope", s)
	}
	u.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	if p.user != "" {
		req.SetBasicAuth(p.user, p.pass)
	}
	resp, err := p.c.Do(req)
	if err != nil {
		p.t.Fatalf("token: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("token: status %d", resp.StatusCode)
	}
	var tr struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
		IssuedAt  string `json:"issued_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.Token == "" || tr.IssuedAt == "" {
		p.t.Fatalf("token: bad answer %+v: %v", tr, err)
	}
	if tr.ExpiresIn != p.reg.opts.TokenTTL {
		p.t.Fatalf("token: expires_in %d, want %d", tr.ExpiresIn, p.reg.opts.TokenTTL)
	}
	return tr.Token
}

// parseChallenge reads `Bearer k="v",k2="v2"` (values without commas inside
// quotes other than scope actions, which we handle).
func parseChallenge(h string) map[string]string {
	out := map[string]string{}
	rest := strings.TrimPrefix(h, "Bearer ")
	for rest != "" {
		k, v, ok := strings.Cut(rest, `="`)
		if !ok {
			break
		}
		val, after, _ := strings.Cut(v, `"`)
		out[strings.TrimSpace(k)] = val
		rest = strings.TrimPrefix(after, ",")
	}
	return out
}

// pullImage fetches an image's manifest by tag and every blob, verifying
// digests.
func (p *puller) pullImage(img Image) {
	p.t.Helper()
	ref := img.Tag
	if ref == "" {
		ref = img.ManifestDigest.String()
	}
	resp, body := p.get("/v2/"+img.Repo+"/manifests/"+ref, img.MediaType)
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("manifest %s: status %d: %s", ref, resp.StatusCode, body)
	}
	if got := digest.FromBytes(body); got != img.ManifestDigest || resp.Header.Get("Docker-Content-Digest") != got.String() {
		p.t.Fatalf("manifest %s: digest %s (header %s), want %s", ref, got, resp.Header.Get("Docker-Content-Digest"), img.ManifestDigest)
	}
	if ct := resp.Header.Get("Content-Type"); ct != img.MediaType {
		p.t.Fatalf("manifest %s: Content-Type %q, want %q", ref, ct, img.MediaType)
	}
	for _, b := range append([]Blob{img.Config}, img.Layers...) {
		p.pullBlob(img.Repo, b)
	}
}

func (p *puller) pullBlob(repo string, b Blob) {
	p.t.Helper()
	resp, body := p.get("/v2/" + repo + "/blobs/" + b.Digest.String())
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("blob %s: status %d", b.Digest, resp.StatusCode)
	}
	if got := digest.FromBytes(body); got != b.Digest || int64(len(body)) != b.Size {
		p.t.Fatalf("blob %s: got %s (%d bytes), want %d bytes", b.Digest, got, len(body), b.Size)
	}
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
