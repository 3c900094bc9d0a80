//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"golang.org/x/crypto/bcrypt"
)

// proxyCmd runs the proxy binary with args (a subcommand) and returns its
// exit code, stdout and stderr; stdout is a pipe, never a terminal.
func proxyCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	requireProxy(t)
	return binCmd(t, proxyBin, args...)
}

// binCmd is proxyCmd for the binary bin (a copy, or the full build).
func binCmd(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	t.Logf("$ %s %s → exit %d (%s)", filepath.Base(bin), strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return code, out.String(), errb.String()
}

// TestWarmThenSkopeo (issue 6): `warm` through the running proxy fills the
// cache so that a following skopeo copy makes no upstream request at all;
// its plain output and exit codes are checked.
func TestWarmThenSkopeo(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo")
	u := startUpstreams(t)
	// Tags are trusted for an hour: the copy needs no revalidation either.
	p := startProxyWith(t, u, "manifestCache:\n  enabled: true\n")
	img := smallImage(t, u.Hub, "library/e2e-warm", "v1")
	idx := u.Hub.PushIndex(t, "library/e2e-warm-multi", "v2")
	list := writeFile(t, t.TempDir(), "images.txt", "# one per line\ndocker.io/library/e2e-warm-multi:v2\n")

	code, out, errOut := proxyCmd(t, "warm", "--listen", p.Addr, "e2e-warm:v1", "--file", list)
	if code != 0 {
		t.Fatalf("warm: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, re := range []string{
		`(?m)^warmed docker\.io/library/e2e-warm:v1 linux/amd64: 3 blobs, 3\.0 MiB in \S+ \(3 fetched, 0 already cached\)$`,
		`(?m)^warmed docker\.io/library/e2e-warm-multi:v2 linux/amd64: 2 blobs, \S+ \S+ in \S+ \(2 fetched, 0 already cached\)$`,
		`(?m)^IMAGE +PLATFORMS +BLOBS +BYTES +RESULT$`,
		`(?m)^docker\.io/library/e2e-warm:v1 +linux/amd64 +3 +3\.0 MiB +ok$`,
		`(?m)^docker\.io/library/e2e-warm-multi:v2 +linux/amd64 +2 +\S+ \S+ +ok$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("warm output lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\r") {
		t.Errorf("warm drew progress bars into a pipe: %q", out)
	}

	u.resetCounts()
	mark := p.Mark()
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	l := skopeoCopy(t, conf, policy, "docker.io/library/e2e-warm:v1", "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	skopeoCopy(t, conf, policy, "docker.io/library/e2e-warm-multi:v2", "v2", "--override-arch", "amd64", "--override-os", "linux")
	if reqs := u.Hub.Requests(); len(reqs) != 0 {
		t.Errorf("skopeo after warm: upstream saw %d requests, want none: %v", len(reqs), reqs)
	}
	p.requireBlobHits(t, mark, imageBlobs(img)...)
	p.requireBlobHits(t, mark, imageBlobs(idx.Images[0])...)

	// A missing image fails (exit 1) with the proxy's OCI error; the
	// others are still warmed, now from the cache.
	code, out, errOut = proxyCmd(t, "warm", "--proxy", p.URL, "library/e2e-missing:v1", "e2e-warm:v1")
	if code != 1 {
		t.Fatalf("warm with a missing image: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "failed docker.io/library/e2e-missing:v1: manifest v1: 404 Not Found: MANIFEST_UNKNOWN") {
		t.Errorf("stderr does not name the image and the OCI error:\n%s", errOut)
	}
	if !strings.Contains(out, "warmed docker.io/library/e2e-warm:v1 linux/amd64: 3 blobs, 3.0 MiB") || !strings.Contains(out, "(0 fetched, 3 already cached)") {
		t.Errorf("the other image was not warmed from the cache:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^docker\.io/library/e2e-missing:v1 +- +0 +0 B +failed: MANIFEST_UNKNOWN$`).MatchString(out) {
		t.Errorf("summary lacks the failed row:\n%s", out)
	}
	// Bad arguments: exit 2.
	if code, _, errOut = proxyCmd(t, "warm", "--proxy", p.URL, "--platform", "linux"); code != 2 {
		t.Errorf("warm with bad arguments: exit %d, want 2: %s", code, errOut)
	}
}

// TestSigtermDuringFill (issue 6): SIGTERM while a blob fill is parked
// upstream. Released within shutdownGrace, the fill completes, its client
// gets every byte, the verified blob is committed and the process exits 0.
// Not released, the fill is abandoned when the grace period ends and the
// process exits 0 just after it: no blob, no upload left.
func TestSigtermDuringFill(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	const grace = 3 * time.Second
	for _, tc := range []struct {
		name    string
		release bool
	}{
		{"released within the grace period", true},
		{"abandoned after the grace period", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true})
			dgst, size := reg.PushBigBlob(t, "library/e2e-term", 32)
			dir := t.TempDir()
			cacheDir := filepath.Join(dir, "cache")
			p := startProxyIn(t, dir, "term", func(addr string) string {
				return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nshutdownGrace: %s\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n",
					addr, cacheDir, filepath.Join(dir, "ca"), grace, reg.URL, reg.CAFile)
			})
			reg.SetFault(testreg.FaultBlobDelay)
			t.Cleanup(func() { reg.SetFault(testreg.FaultNone) })
			type result struct {
				status int
				n      int64
				sum    string
				err    error
			}
			res := make(chan result, 1)
			go func() {
				status, n, sum, err := fetch(http.MethodGet, p.URL+"/v2/docker.io/library/e2e-term/blobs/"+dgst.String())
				res <- result{status, n, sum.String(), err}
			}()
			reg.WaitBlobsParked(t, 1)
			waitUploadSize(t, cacheDir, 0)

			p.killed = true // the exit is the test's doing
			mark := p.Mark()
			start := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			p.waitLogLines(t, mark, "shutting down")
			if tc.release {
				reg.ReleaseBlobs()
			}
			select {
			case <-p.done:
			case <-time.After(grace + 10*time.Second):
				t.Fatalf("proxy still running %s after SIGTERM (grace %s)", time.Since(start).Round(time.Millisecond), grace)
			}
			took := time.Since(start)
			t.Logf("exit after SIGTERM: %v in %s", p.err, took.Round(time.Millisecond))
			if p.err != nil {
				t.Errorf("exit status after SIGTERM: %v, want 0", p.err)
			}
			r := <-res
			blobPath := filepath.Join(cacheDir, "blobs", "sha256", dgst.Encoded()[:2], dgst.Encoded(), "data")
			if tc.release {
				if took > grace {
					t.Errorf("exit took %s although the fill finished: the grace period is %s", took, grace)
				}
				if r.err != nil || r.status != 200 || r.n != size || r.sum != dgst.String() {
					t.Errorf("client: status %d, %d bytes, %s, %v; want the whole blob", r.status, r.n, r.sum, r.err)
				}
				if got := fileDigest(t, blobPath); got != dgst.String() {
					t.Errorf("committed blob digest %s, want %s", got, dgst)
				}
			} else {
				if took < grace || took > grace+5*time.Second {
					t.Errorf("exit after %s, want just after the %s grace period", took, grace)
				}
				if r.err == nil && r.n == size {
					t.Errorf("the abandoned fill's client got a complete body (status %d)", r.status)
				}
				if files := filesUnder(t, filepath.Join(cacheDir, "blobs")); len(files) != 0 {
					t.Errorf("files under blobs/ after an abandoned fill: %v", files)
				}
				if lines := p.logLines(mark, "grace period over"); len(lines) == 0 {
					t.Errorf("no log line about the grace period:\n%s", tail(p.LogSince(mark), 30))
				}
			}
			if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 0 {
				t.Errorf("uploads left after SIGTERM: %v", files)
			}
		})
	}
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Error(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// TestHealthAndReadiness (issue 6): /healthz and /readyz of the binary,
// and the healthcheck subcommand; /readyz turns 503 when the cache
// directory becomes read-only (a read-only bind mount over it; root
// ignores file modes) and 200 again when it is writable.
func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	u := startUpstreams(t)
	p := startProxy(t, u)
	cacheDir := filepath.Join(filepath.Dir(p.LogPath), "cache")
	get := func(path string) (int, string) {
		resp, err := plainClient().Get(p.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitReadyz := func(status int, part string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s, body := get("/readyz")
			if s == status && strings.Contains(body, part) {
				t.Logf("/readyz: %d %q", s, strings.TrimSpace(body))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz: %d %q, want %d with %q", s, body, status, part)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if s, body := get("/healthz"); s != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", s, body)
	}
	waitReadyz(200, "ok")
	if code, out, errOut := proxyCmd(t, "healthcheck", "--listen", p.Addr); code != 0 || !strings.Contains(out, "/healthz: ok") {
		t.Fatalf("healthcheck: exit %d %q %q", code, out, errOut)
	}

	if out, err := exec.Command("mount", "--bind", cacheDir, cacheDir).CombinedOutput(); err != nil {
		t.Fatalf("bind mount needs root (CI runs as root): %v: %s", err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if out, err := exec.Command("umount", cacheDir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", cacheDir, err, out)
				exec.Command("umount", "-l", cacheDir).Run()
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", cacheDir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	waitReadyz(http.StatusServiceUnavailable, "not ready: storage not writable")
	if _, body := get("/readyz"); !strings.Contains(body, "read-only file system") || strings.Count(body, "\n") != 1 {
		t.Errorf("/readyz reason should be one line naming the cause: %q", body)
	}
	if s, _ := get("/healthz"); s != 200 {
		t.Errorf("/healthz with a read-only cache: %d, want 200 (the process serves)", s)
	}
	if code, _, errOut := proxyCmd(t, "healthcheck", "--ready", "--listen", p.Addr); code != 1 || !strings.Contains(errOut, "503") {
		t.Errorf("healthcheck --ready with a read-only cache: exit %d %q, want 1", code, errOut)
	}
	unmount()
	waitReadyz(200, "ok")
}

// TestSighupReload (issue 6): SIGHUP to the binary reloads the access
// policy without a restart and without dropping a download in progress:
// the registry turns from public to proxy users only, then a user added
// to the htpasswd file can read; a broken configuration is refused in one
// log line naming the key and the old policy stays. (The proxy starts
// public: the harness waits for an anonymous GET /v2/ to answer 200.)
func TestSighupReload(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := smallImage(t, reg, "library/e2e-hup", "v1")
	dir := t.TempDir()
	users := filepath.Join(dir, "htpasswd")
	writeUsers := func(names ...string) {
		var b strings.Builder
		for _, n := range names {
			h, err := bcrypt.GenerateFromPassword([]byte(n+"-pw"), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s:%s\n", n, h)
		}
		if err := os.WriteFile(users, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("alice")
	mode := "public"
	cfg := func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nclientAuth:\n  htpasswd: %q\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n    access:\n      mode: %s\n",
			addr, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"), users, reg.URL, reg.CAFile, mode)
	}
	p := startProxyIn(t, dir, "hup", cfg)
	cfgPath := filepath.Join(dir, strings.Replace(strings.TrimSuffix(filepath.Base(p.LogPath), ".log"), "proxy-", "config-", 1)+".yml")
	if _, err := os.Stat(cfgPath); err != nil {
		t.Fatal(err)
	}
	get := func(path, user string) int {
		req := mustRequest(http.MethodGet, p.URL+path)
		req.Header.Set("Accept", img.MediaType)
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := plainClient().Do(req)
		if err != nil {
			t.Fatalf("GET %s as %q: %v", path, user, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	hangup := func(want string) []string {
		t.Helper()
		mark := p.Mark()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		return p.waitLogLines(t, mark, want)
	}
	manifest := "/v2/docker.io/library/e2e-hup/manifests/v1"
	if s := get(manifest, ""); s != 200 {
		t.Fatalf("anonymous while public: %d", s)
	}

	// A download in progress across the reloads.
	reg.SetFault(testreg.FaultBlobDelay)
	t.Cleanup(func() { reg.SetFault(testreg.FaultNone) })
	layer := img.Layers[1]
	type result struct {
		n   int64
		sum string
		err error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := plainClient().Do(mustRequest(http.MethodGet, p.URL+"/v2/docker.io/library/e2e-hup/blobs/"+layer.Digest.String()))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		res <- result{n, "sha256:" + hex.EncodeToString(h.Sum(nil)), err}
	}()
	reg.WaitBlobsParked(t, 1)

	// Public → proxy users only.
	mode = "authenticated"
	if err := os.WriteFile(cfgPath, []byte(cfg(p.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup("reloaded credentials and access policy")
	for user, want := range map[string]int{"": 401, "alice": 200, "bob": 401} {
		if s := get(manifest, user); s != want {
			t.Errorf("after the first SIGHUP, %q: %d, want %d", user, s, want)
		}
	}
	// bob joins the htpasswd file.
	writeUsers("alice", "bob")
	hangup("reloaded credentials and access policy")
	if s := get(manifest, "bob"); s != 200 {
		t.Errorf("bob after SIGHUP: %d, want 200", s)
	}
	reg.ReleaseBlobs()
	if r := <-res; r.err != nil || r.n != layer.Size || r.sum != layer.Digest.String() {
		t.Errorf("download across two SIGHUPs: %d bytes, %s, %v; want the whole layer", r.n, r.sum, r.err)
	}

	// A broken configuration: refused, logged once naming the key.
	good, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, append(good, []byte("defaultAccessMode: sometimes\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	lines := hangup("reload failed")
	if len(lines) != 1 || !strings.Contains(lines[0], "defaultAccessMode") {
		t.Errorf("want one reload failure line naming defaultAccessMode: %q", lines)
	}
	for user, want := range map[string]int{"": 401, "bob": 200, "carol": 401} {
		if s := get(manifest, user); s != want {
			t.Errorf("after a refused reload, %q: %d, want %d (the old policy stays)", user, s, want)
		}
	}
}
