//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// The tests in this file discover referrers with oras through the
// proxy, from an upstream with the referrers API (go-containerregistry's
// registry: distribution has none) and from one without (Debian's
// docker-registry 2.8, where oras attach writes the fallback tag
// sha256-<hex>), on the mirror path and through the shim.

const (
	sigArtifact  = "application/vnd.example.sig+json"
	sbomArtifact = "application/vnd.example.sbom+json"
)

// referrerUpstreams are the two upstreams, each served under a made-up
// host name (api.test:<port>, legacy.test:<port>) that only the proxy maps
// to its loopback address.
type referrerUpstreams struct {
	API    *testutil.OCIRegistry
	Legacy *testutil.DockerRegistry
}

func startReferrerUpstreams(t *testing.T) *referrerUpstreams {
	t.Helper()
	return &referrerUpstreams{API: testutil.StartOCIRegistry(t), Legacy: testutil.StartDockerRegistry(t)}
}

// aliasOf is the made-up host name of a loopback upstream.
func aliasOf(t *testing.T, name, hostPort string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	return name + ".test:" + port
}

// startReferrerProxy starts a proxy serving both upstreams (and
// docker-registry as docker.io too) with extra YAML appended.
func startReferrerProxy(t *testing.T, u *referrerUpstreams, extra string) *proxy {
	t.Helper()
	dir := t.TempDir()
	return startProxyIn(t, dir, "referrers", func(addr string) string {
		return fmt.Sprintf(`listen: %q
cacheDir: %q
caDir: %q
logFormat: text
dockerHub: true
registries:
  - host: %q
    endpoint: %q
    insecure: true
  - host: %q
    endpoint: %q
    insecure: true
  - host: docker.io
    endpoint: %q
    insecure: true
`, addr, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"),
			aliasOf(t, "api", u.API.Host), u.API.URL, aliasOf(t, "legacy", u.Legacy.Host), u.Legacy.URL, u.Legacy.URL) + extra
	})
}

// oras runs oras with an empty registry configuration and returns its
// output.
func oras(t *testing.T, env []string, args ...string) string {
	t.Helper()
	home := t.TempDir()
	cfg := writeFile(t, home, "config.json", "{}")
	return run(t, append([]string{"HOME=" + home, "DOCKER_CONFIG=" + home}, env...), "oras", append(args, "--registry-config", cfg)...)
}

// pushWithReferrer pushes an artifact to repo on the upstream at
// hostPort (plain HTTP) and attaches a signature to it with oras, and
// returns the subject's and the signature's digests. The signature's
// config has its artifact type as media type, which
// go-containerregistry's registry reports as the artifactType.
func pushWithReferrer(t *testing.T, hostPort, repo string) (subject, sig string) {
	t.Helper()
	dir := t.TempDir()
	file := writeFile(t, dir, "app.txt", "the app of "+hostPort)
	cfg := writeFile(t, dir, "sig-config.json", "{}")
	sigFile := writeFile(t, dir, "sig.json", `{"signed":true}`)
	ref := hostPort + "/" + repo
	subject = strings.TrimSpace(oras(t, nil, "push", "--plain-http", "--format", "go-template", "--template", "{{.digest}}",
		ref+":v1", file+":text/plain", "--disable-path-validation", "--no-tty"))
	sig = strings.TrimSpace(oras(t, nil, "attach", "--plain-http", "--artifact-type", sigArtifact,
		"--config", cfg+":"+sigArtifact, "--format", "go-template", "--template", "{{.digest}}",
		ref+"@"+subject, sigFile+":application/json", "--disable-path-validation", "--no-tty"))
	return subject, sig
}

// discovered runs oras discover (one level, JSON) with the given extra
// arguments and returns the referrers as artifactType@digest.
func discovered(t *testing.T, env []string, args ...string) []string {
	t.Helper()
	got, _ := discoveredWithLog(t, env, args...)
	return got
}

// discoveredWithLog is discovered that also returns what oras printed
// besides the JSON (its warnings).
func discoveredWithLog(t *testing.T, env []string, args ...string) ([]string, string) {
	t.Helper()
	out := oras(t, env, append([]string{"discover", "--format", "json", "--depth", "1", "--no-tty"}, args...)...)
	// Warnings come first (stderr), the JSON document last.
	log := ""
	if i := strings.Index(out, "\n{"); i >= 0 {
		log, out = out[:i], out[i+1:]
	}
	var tree struct {
		Referrers []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"referrers"`
	}
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Fatalf("oras discover %v: %v\n%s", args, err, out)
	}
	var got []string
	for _, m := range tree.Referrers {
		got = append(got, m.ArtifactType+"@"+m.Digest)
	}
	return got, log
}

// TestReferrersOras: oras discover lists a signature attached upstream,
// for an upstream with the referrers API and for docker-registry 2.8 (the
// fallback tag), on the mirror path and through the shim; --artifact-type
// filters; and a second discover inside the TTL asks upstream nothing.
func TestReferrersOras(t *testing.T) {
	t.Parallel()
	requireTools(t, "oras")
	u := startReferrerUpstreams(t)
	p := startReferrerProxy(t, u, "manifestCache:\n  enabled: true\n")
	shim := newViaShim(t, p)
	type upstreamCase struct {
		name, hostPort string
		requests       func() int
		reset          func()
	}
	for _, up := range []upstreamCase{
		{"api", u.API.Host, func() int { return len(u.API.Requests()) }, u.API.ResetCounts},
		{"legacy", u.Legacy.Host, func() int { return len(u.Legacy.Requests()) }, u.Legacy.ResetCounts},
	} {
		alias := aliasOf(t, up.name, up.hostPort)
		ns := strings.ReplaceAll(alias, ":", "_")
		repo := "team/" + up.name
		subject, sig := pushWithReferrer(t, up.hostPort, repo)
		want := sigArtifact + "@" + sig
		doors := []struct {
			door string
			env  []string
			args []string
		}{
			{"mirror path", nil, []string{"--plain-http", p.Addr + "/" + ns + "/" + repo + "@" + subject}},
			{"shim", shim.env("SSL_CERT_FILE=" + shim.Bundle), []string{alias + "/" + repo + "@" + subject}},
		}
		for _, d := range doors {
			what := up.name + " upstream, " + d.door
			if got := discovered(t, d.env, d.args...); !slices.Equal(got, []string{want}) {
				t.Errorf("%s: discovered %v, want %s", what, got, want)
			}
			if got := discovered(t, d.env, append([]string{"--artifact-type", sigArtifact}, d.args...)...); !slices.Equal(got, []string{want}) {
				t.Errorf("%s: discovered with --artifact-type %s: %v, want %s", what, sigArtifact, got, want)
			}
			up.reset()
			if got := discovered(t, d.env, append([]string{"--artifact-type", sbomArtifact}, d.args...)...); len(got) != 0 {
				t.Errorf("%s: discovered with --artifact-type %s: %v, want none", what, sbomArtifact, got)
			}
			if n := up.requests(); n != 0 {
				t.Errorf("%s: a discover inside the TTL sent %d requests upstream, want none", what, n)
			}
		}
	}
}

// TestReferrersStale: without a TTL tier every discover asks upstream;
// when upstream is down the last referrers answer is served stale with a
// Warning, and oras still lists the signature.
func TestReferrersStale(t *testing.T) {
	t.Parallel()
	requireTools(t, "oras")
	u := startReferrerUpstreams(t)
	p := startReferrerProxy(t, u, "")
	for _, up := range []struct {
		name, hostPort string
		stop           func()
	}{{"api", u.API.Host, u.API.Stop}, {"legacy", u.Legacy.Host, u.Legacy.Stop}} {
		ns := strings.ReplaceAll(aliasOf(t, up.name, up.hostPort), ":", "_")
		repo := "team/" + up.name
		subject, sig := pushWithReferrer(t, up.hostPort, repo)
		want := []string{sigArtifact + "@" + sig}
		ref := p.Addr + "/" + ns + "/" + repo + "@" + subject
		if got := discovered(t, nil, "--plain-http", ref); !slices.Equal(got, want) {
			t.Fatalf("%s: discovered %v, want %v", up.name, got, want)
		}
		up.stop()
		resp, body := getReferrersRaw(t, p.URL+"/v2/"+ns+"/"+repo+"/referrers/"+subject+"?artifactType="+url.QueryEscape(sigArtifact))
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Warning"), "stale") ||
			resp.Header.Get("X-Cache") != "STALE" || !strings.Contains(body, sig) {
			t.Errorf("%s upstream down: %d X-Cache %q Warning %q: %s", up.name, resp.StatusCode, resp.Header.Get("X-Cache"), resp.Header.Get("Warning"), body)
		}
		// oras shows the Warning header to its user.
		if got, log := discoveredWithLog(t, nil, "--plain-http", ref); !slices.Equal(got, want) || !strings.Contains(log, "Response is stale") {
			t.Errorf("%s upstream down: discovered %v, want %v, with a warning; oras said %s", up.name, got, want, log)
		}
	}
}

// getReferrersRaw GETs a referrers URL of the proxy without a proxy.
func getReferrersRaw(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}
