//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// credJSONKey returns a GCR-style _json_key password: a multi-line JSON
// document with spaces, colons (also "::" and ":::" — the field delimiter
// of the entry it travels in) and quotes, holding a random marker.
func credJSONKey(marker string) string {
	return `{
  "type": "service_account",
  "project_id": "e2e-project",
  "private_key_id": "` + marker + `",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE` + marker + `:::AAAA\n-----END PRIVATE KEY-----\n",
  "client_email": "proxy@e2e-project.iam.gserviceaccount.com",
  "note": "a: b :: c and \"quotes\" and  two  spaces"
}
`
}

func credRandom(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startCredProxy starts the proxy binary with the YAML config cfg (its
// listen address is prepended) and extra environment variables, the way
// startProxy does for the shared configuration.
func startCredProxy(t *testing.T, cfg string, env []string) *proxy {
	t.Helper()
	requireProxy(t)
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := freeAddr(t)
		full := fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\n", addr, filepath.Join(dir, "cache"), filepath.Join(dir, "ca")) + cfg
		cfgPath := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
		if err := os.WriteFile(cfgPath, []byte(full), 0o644); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, fmt.Sprintf("proxy-%d.log", attempt))
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(proxyBin, "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}, env...)
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatal(err)
		}
		logFile.Close()
		p := &proxy{Addr: addr, URL: "http://" + addr, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
		go func() { p.err = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() {
			p.stop(t)
			if t.Failed() {
				t.Logf("proxy log (%s):\n%s", logPath, tail(p.Log(), 300))
			}
		})
		if err := p.waitReady(30 * time.Second); err != nil {
			p.startFailed = true
			if strings.Contains(p.Log(), "address already in use") {
				lastErr = fmt.Errorf("%w: %s", errAddrInUse, addr)
				continue
			}
			t.Fatalf("starting proxy: %v\nlog:\n%s", err, tail(p.Log(), 100))
		}
		t.Logf("proxy pid %d listening on %s", cmd.Process.Pid, addr)
		return p
	}
	t.Fatalf("starting proxy: %v", lastErr)
	return nil
}

// TestUpstreamCredentialsFromAuthRegistries: a token-auth upstream whose
// realm is on another host name (localhost, GitLab-style) and whose
// password is a multi-line JSON key is configured only through
// AUTH_REGISTRIES with ";;;" and ":::" delimiters, the entry naming the
// realm host. skopeo and crane pull through the mirror without any client
// credentials; the proxy log and the clients' outputs hold no password and
// no Bearer token.
func TestUpstreamCredentialsFromAuthRegistries(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo", "crane")
	marker := credRandom(t)
	password := credJSONKey(marker)
	otherPassword := "other-" + credRandom(t) + " with: colons"
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, RealmHost: "localhost", Username: "_json_key", Password: password})
	_, port, err := net.SplitHostPort(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	host, ns := "registry.test:"+port, "registry.test_"+port
	imgSkopeo := smallImage(t, reg, "group/project", "v1")
	imgCrane := smallImage(t, reg, "group/other", "v2")

	cfg := fmt.Sprintf(`logFormat: text
debug: true
dockerHub: false
registries:
  - host: %q
    endpoint: %q
    caFile: %q
    tokenRealms: [localhost]
    # The realm listens on another loopback port: an internal address
    # the operator opens for this registry.
    allowNetworks: [127.0.0.0/8, "::1"]
    access:
      mode: public
`, host, reg.URL, reg.CAFile)
	env := []string{
		"AUTH_REGISTRIES_DELIMITER=;;;",
		"AUTH_REGISTRY_DELIMITER=:::",
		"AUTH_REGISTRIES=quay.io:::robot:::" + otherPassword + ";;;\nlocalhost:::_json_key:::" + password,
	}
	p := startCredProxy(t, cfg, env)

	var outputs []string
	// skopeo through a registries.conf mirror, no credentials anywhere.
	conf := writeFile(t, t.TempDir(), "registries.conf", fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = %[1]q
location = %[2]q
insecure = true

[[registry.mirror]]
location = "%[3]s/%[4]s"
insecure = true
`, host, deadLocation, p.Addr, ns))
	dir := filepath.Join(t.TempDir(), "oci")
	outputs = append(outputs, run(t, []string{"REGISTRY_AUTH_FILE=" + filepath.Join(t.TempDir(), "auth.json")}, "skopeo",
		"--registries-conf", conf, "--policy", policyJSON(t), "--debug",
		"copy", "--retry-times", "0", "docker://"+host+"/group/project:v1", "oci:"+dir+":v1"))
	l := ociLayout{t: t, dir: dir}
	l.requireImage(l.top("v1").Digest.String(), imgSkopeo)

	// crane through the mirror path /v2/<namespace>/…, no credentials.
	tarball := filepath.Join(t.TempDir(), "out.tar")
	outputs = append(outputs, crane(t, "pull", "--insecure", "-v", p.Addr+"/"+ns+"/group/other:v2", tarball))
	requireTarball(t, tarball, imgCrane)

	if n := reg.Count("GET", testreg.KindToken); n == 0 {
		t.Errorf("the token server saw no token request: the upstream was not reached with credentials? %v", reg.Requests())
	}

	// Secret hygiene: no password (whole, or a distinctive piece, or as a
	// Basic header value) and no Bearer token in any log or output.
	needles := []string{
		password, marker, otherPassword, "other-",
		base64.StdEncoding.EncodeToString([]byte("_json_key:" + password))[:40],
		base64.StdEncoding.EncodeToString([]byte("robot:" + otherPassword))[:20],
		"Bearer ",
	}
	haystacks := map[string]string{"proxy log": p.Log()}
	for i, o := range outputs {
		haystacks[fmt.Sprintf("client output %d", i)] = o
	}
	for name, text := range haystacks {
		for j, n := range needles {
			if i := strings.Index(text, n); i >= 0 {
				lo, hi := max(i-80, 0), min(i+len(n)+20, len(text))
				t.Errorf("%s contains secret #%d near: %q", name, j, strings.ReplaceAll(text[lo:hi], n, "<SECRET>"))
			}
		}
	}
}
