//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// getSetup fetches one of the proxy's setup endpoints (or /ca.crt) the
// way a person would: plain HTTP to the proxy's address.
func getSetup(t *testing.T, p *proxy, path string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(p.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, b)
	}
	return string(b)
}

// TestSetupEndpointsWithClients: what the setup endpoints serve works with
// the real clients: /setup/registries.conf with skopeo, the hosts
// directory /setup/containerd writes with ctr --hosts-dir, and the
// HTTPS_PROXY drop-in and CA /setup/systemd installs with ctr (the Kind
// node recipe of docs/kind.md).
func TestSetupEndpointsWithClients(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo", "containerd", "ctr", "bash")
	u := startUpstreams(t)
	p := startProxy(t, u)
	hub := smallImage(t, u.Hub, "library/e2e-setup", "v1")
	priv := smallImage(t, u.Priv, "team/e2e-setup", "v1")
	hubRef := "docker.io/library/e2e-setup:v1"
	privRef := u.PrivHost + "/team/e2e-setup:v1"

	t.Run("registries.conf with skopeo", func(t *testing.T) {
		conf := getSetup(t, p, "/setup/registries.conf")
		for _, mirror := range []string{p.Addr + "/docker.io", p.Addr + "/" + u.PrivNS} {
			if !strings.Contains(conf, fmt.Sprintf("location = %q", mirror)) {
				t.Errorf("/setup/registries.conf has no mirror location %q:\n%s", mirror, conf)
			}
		}
		// Only the primary locations change, to a dead loopback port, so
		// that a failing mirror never falls back to the real registry.
		for _, host := range []string{"docker.io", u.PrivHost} {
			primary := fmt.Sprintf("location = %q", host)
			if !strings.Contains(conf, primary) {
				t.Fatalf("/setup/registries.conf has no primary %s:\n%s", primary, conf)
			}
			conf = strings.ReplaceAll(conf, primary, fmt.Sprintf("location = %q", deadLocation))
		}
		path := writeFile(t, t.TempDir(), "registries.conf", conf)
		policy := policyJSON(t)
		mark := p.Mark()
		l := skopeoCopy(t, path, policy, hubRef, "v1")
		l.requireImage(l.top("v1").Digest.String(), hub)
		l = skopeoCopy(t, path, policy, privRef, "v1")
		l.requireImage(l.top("v1").Digest.String(), priv)
		if len(p.accessLines(mark, "GET", "/v2/docker.io/library/e2e-setup/manifests/v1")) == 0 {
			t.Errorf("skopeo did not use the docker.io mirror path:\n%s", p.LogSince(mark))
		}
		if len(p.accessLines(mark, "GET", "/v2/"+u.PrivNS+"/team/e2e-setup/manifests/v1")) == 0 {
			t.Errorf("skopeo did not use the %s mirror path:\n%s", u.PrivNS, p.LogSince(mark))
		}
	})

	t.Run("containerd hosts dir with ctr", func(t *testing.T) {
		script := writeFile(t, t.TempDir(), "containerd.sh", getSetup(t, p, "/setup/containerd"))
		root := t.TempDir()
		env := []string{"SETUP_ROOT=" + root}
		run(t, env, "bash", "-n", script)
		run(t, env, "bash", script)
		if out := run(t, env, "bash", script); strings.Contains(out, "wrote ") {
			t.Errorf("running /setup/containerd twice rewrote files:\n%s", out)
		}
		hostsDir := filepath.Join(root, "etc", "containerd", "certs.d")
		for _, d := range []string{"_default", "docker.io", u.PrivHost} {
			b, err := os.ReadFile(filepath.Join(hostsDir, d, "hosts.toml"))
			if err != nil || !strings.Contains(string(b), p.URL) {
				t.Errorf("%s/hosts.toml: %v\n%s", d, err, b)
			}
		}
		c := startContainerd(t)
		const ns = "e2e-setup"
		mark := p.Mark()
		for _, x := range []struct{ ref, top string }{{hubRef, hub.ManifestDigest.String()}, {privRef, priv.ManifestDigest.String()}} {
			c.ctr(ns, "images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", "--platform", "linux/amd64", x.ref)
		}
		c.checkPulled(ns, hubRef, hub, hub.ManifestDigest.String())
		c.checkPulled(ns, privRef, priv, priv.ManifestDigest.String())
		if len(p.accessLines(mark, "GET", "ns=docker.io")) == 0 || len(p.accessLines(mark, "GET", "ns=registry.test%3A")) == 0 {
			t.Errorf("ctr did not ask the proxy with ?ns=docker.io and ?ns=%s:\n%s", u.PrivHost, p.LogSince(mark))
		}
	})

	t.Run("systemd drop-in and CA with ctr through HTTPS_PROXY", func(t *testing.T) {
		script := writeFile(t, t.TempDir(), "systemd.sh", getSetup(t, p, "/setup/systemd"))
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "usr/local/share/ca-certificates"), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, []string{"SYSTEMD_ROOT=" + root}, "bash", script)
		dropIn, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/containerd.service.d/http-proxy.conf"))
		if err != nil {
			t.Fatal(err)
		}
		// The unit's Environment= assignments, as systemd would pass them.
		var env []string
		for _, m := range regexp.MustCompile(`"([A-Z_]+=[^"]*)"`).FindAllStringSubmatch(string(dropIn), -1) {
			env = append(env, m[1])
		}
		if !containsString(env, "HTTPS_PROXY="+p.URL) {
			t.Fatalf("drop-in environment %q lacks HTTPS_PROXY=%s:\n%s", env, p.URL, dropIn)
		}
		ca := filepath.Join(root, "usr/local/share/ca-certificates/container-registry-proxy.crt")
		if b, err := os.ReadFile(ca); err != nil || string(b) != getSetup(t, p, "/ca.crt") {
			t.Fatalf("installed CA %s differs from /ca.crt: %v", ca, err)
		}
		c := startContainerd(t)
		const ns = "e2e-systemd"
		mark := p.Mark()
		run(t, env, "ctr", "--address", c.Sock, "-n", ns, "images", "pull", "--tlscacert", ca,
			"--snapshotter", "native", "--platform", "linux/amd64", privRef)
		c.checkPulled(ns, privRef, priv, priv.ManifestDigest.String())
		p.waitLogLines(t, mark, "method=CONNECT", connectField(u.PrivHost), "decision=intercept")
	})
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
