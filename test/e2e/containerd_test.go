//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// containerd is a containerd daemon with its own root, state and socket
// under a temp dir, without CRI and with the native snapshotter.
type containerd struct {
	t        *testing.T
	Sock     string
	HostsDir string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
}

// startContainerd starts containerd and waits until ctr can talk to it;
// t.Cleanup stops it by PID (SIGTERM, then SIGKILL after a bound).
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	requireTools(t, "containerd", "ctr")
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "crp-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{
		t:        t,
		Sock:     filepath.Join(dir, "c.sock"),
		HostsDir: filepath.Join(dir, "hosts"),
		logPath:  filepath.Join(dir, "containerd.log"),
		done:     make(chan struct{}),
	}
	cfg := writeFile(t, dir, "config.toml", fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Sock, c.Sock+".ttrpc", filepath.Join(dir, "opt")))
	logFile, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Env = cleanEnv()
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			b, _ := os.ReadFile(c.logPath)
			t.Logf("containerd log:\n%s", tail(string(b), 60))
		}
		// Snapshots may hold read-only dirs; make them removable first.
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing %s: %v", dir, err)
		}
	})
	c.waitReady(30 * time.Second)
	return c
}

func (c *containerd) waitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if conn, err := net.Dial("unix", c.Sock); err == nil {
			conn.Close()
			if _, err := tryRun(c.t, nil, "ctr", "--address", c.Sock, "version"); err == nil {
				return
			}
		}
		select {
		case <-c.done:
			b, _ := os.ReadFile(c.logPath)
			c.t.Fatalf("containerd exited before it was ready:\n%s", tail(string(b), 60))
		case <-deadline.C:
			c.t.Fatalf("containerd socket %s not ready after %s", c.Sock, timeout)
		case <-tick.C:
		}
	}
}

func (c *containerd) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(15 * time.Second):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// ctr runs ctr against this daemon in namespace ns.
func (c *containerd) ctr(ns string, args ...string) string {
	c.t.Helper()
	return run(c.t, nil, "ctr", append([]string{"--address", c.Sock, "-n", ns}, args...)...)
}

// mirrorHost writes HostsDir/<host>/hosts.toml sending every pull of host
// to the proxy (which containerd asks with ?ns=<host>); its server is a
// dead loopback port, so a failing mirror never reaches a real registry.
func (c *containerd) mirrorHost(host string, p *proxy) {
	c.t.Helper()
	writeFile(c.t, filepath.Join(c.HostsDir, host), "hosts.toml", fmt.Sprintf(`server = "http://%s"

[host."%s"]
  capabilities = ["pull", "resolve"]
`, deadLocation, p.URL))
}

// pull pulls ref (linux/amd64, unpacked with the native snapshotter) and
// checks the image digest ctr reports.
func (c *containerd) pull(ns, ref string, img testreg.Image) {
	c.t.Helper()
	c.pullTop(ns, ref, img, img.ManifestDigest.String())
}

// pullTop pulls ref, whose tag names top (img's manifest or an index
// holding it for linux/amd64), and checks what containerd stored.
func (c *containerd) pullTop(ns, ref string, img testreg.Image, top string) {
	c.t.Helper()
	c.ctr(ns, "images", "pull", "--hosts-dir", c.HostsDir, "--snapshotter", "native", "--platform", "linux/amd64", ref)
	c.checkPulled(ns, ref, img, top)
}

// checkPulled checks that ref names top in namespace ns and that every
// blob of img is in the content store, unpacked.
func (c *containerd) checkPulled(ns, ref string, img testreg.Image, top string) {
	c.t.Helper()
	got := c.imageDigest(ns, ref)
	if got != top {
		c.t.Errorf("ctr images ls: %s has digest %q, want the pushed %s", ref, got, top)
	}
	// Every blob is in the content store and the image unpacked.
	have := c.contentDigests(ns)
	for _, d := range append([]string{top, img.ManifestDigest.String()}, imageBlobs(img)...) {
		if !have[d] {
			c.t.Errorf("content store lacks %s after pulling %s", d, ref)
		}
	}
	out := c.ctr(ns, "images", "check", "--snapshotter", "native", "name=="+ref)
	if !strings.Contains(out, "complete") || strings.Contains(out, "incomplete") || !strings.Contains(out, "true") {
		c.t.Errorf("ctr images check: %s is not complete and unpacked:\n%s", ref, out)
	}
}

// imageDigest returns the DIGEST column of `ctr images ls` for ref.
func (c *containerd) imageDigest(ns, ref string) string {
	c.t.Helper()
	out := c.ctr(ns, "images", "ls")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	c.t.Errorf("ctr images ls has no %s:\n%s", ref, out)
	return ""
}

func (c *containerd) contentDigests(ns string) map[string]bool {
	c.t.Helper()
	have := map[string]bool{}
	for _, d := range strings.Fields(c.ctr(ns, "content", "ls", "-q")) {
		have[d] = true
	}
	return have
}

// forget removes ref and its content, so the next pull fetches every blob
// again (content is shared between namespaces, so a fresh namespace would
// not do).
func (c *containerd) forget(ns, ref string, img testreg.Image, extra ...string) {
	c.t.Helper()
	c.ctr(ns, "images", "rm", "--sync", ref)
	digests := append(append([]string{img.ManifestDigest.String()}, imageBlobs(img)...), extra...)
	have := c.contentDigests(ns)
	var rm []string
	for _, d := range digests {
		if have[d] {
			rm = append(rm, d)
		}
	}
	if len(rm) > 0 {
		c.ctr(ns, append([]string{"content", "rm"}, rm...)...)
	}
	have = c.contentDigests(ns)
	for _, d := range digests {
		if have[d] {
			c.t.Fatalf("content %s still present after removing %s", d, ref)
		}
	}
}

// TestContainerdMirror: ctr pulls Docker Hub images through hosts.toml
// (?ns=docker.io); a second pull after removing the image and its content
// causes no upstream GETs; with upstream down it still succeeds. An image
// of the token-auth registry pulls through ?ns=registry.test:<port>.
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	requireTools(t, "containerd", "ctr")
	u := startUpstreams(t)
	p := startProxy(t, u)
	c := startContainerd(t)
	img := smallImage(t, u.Hub, "library/e2e-ctr", "v1")
	ref := "docker.io/library/e2e-ctr:v1"
	c.mirrorHost("docker.io", p)
	const ns = "e2e"

	// A multi-arch index too: containerd picks linux/amd64 from it.
	idx := u.Hub.PushIndex(t, "library/e2e-ctr", "multi")
	idxRef := "docker.io/library/e2e-ctr:multi"
	amd64 := idx.Images[0]
	pullBoth := func() {
		t.Helper()
		c.pull(ns, ref, img)
		c.pullTop(ns, idxRef, amd64, idx.ManifestDigest.String())
	}
	forgetBoth := func() {
		t.Helper()
		c.forget(ns, ref, img)
		c.forget(ns, idxRef, amd64, idx.ManifestDigest.String())
	}

	mark := p.Mark()
	pullBoth()
	if t.Failed() {
		t.FailNow()
	}
	if lines := p.accessLines(mark, "GET", "ns=docker.io"); len(lines) == 0 {
		t.Errorf("containerd did not ask the proxy with ?ns=docker.io:\n%s", p.LogSince(mark))
	}

	forgetBoth()
	u.resetCounts()
	mark = p.Mark()
	pullBoth()
	requireNoUpstreamGets(t, u.Hub, "second pull")
	p.requireBlobHits(t, mark, imageBlobs(img)...)
	p.requireBlobHits(t, mark, imageBlobs(amd64)...)

	forgetBoth()
	u.Hub.Stop()
	pullBoth()

	// The token-auth upstream, by its made-up name: only the proxy knows
	// where registry.test:<port> really is.
	priv := smallImage(t, u.Priv, "team/e2e-ctr", "v2")
	privRef := u.PrivHost + "/team/e2e-ctr:v2"
	c.mirrorHost(u.PrivHost, p)
	mark = p.Mark()
	c.pull(ns, privRef, priv)
	if lines := p.accessLines(mark, "GET", "ns=registry.test%3A"); len(lines) == 0 {
		t.Errorf("containerd did not ask the proxy with ?ns=%s:\n%s", u.PrivHost, p.LogSince(mark))
	}
	if u.Priv.Count("", testreg.KindToken) == 0 {
		t.Errorf("the proxy never asked the token server: %v", u.Priv.Requests())
	}
}
