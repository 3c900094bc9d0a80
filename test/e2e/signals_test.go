//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"
)

// TestSigtermClientsMidDownload (issue 14, faults): SIGTERM while six
// clients are in the middle of a 64 MiB cached blob (each has read 1 MiB
// and pauses) and a seventh waits on a fill that upstream holds. New
// connections are refused at once. Clients that go on reading within the
// grace period get every byte, and the fill, released, is committed
// verified; the process exits 0. Clients still paused when the grace
// period ends are cut short (a read error, never a complete-looking body),
// the held fill is abandoned: no blob and no upload are left, and the
// process exits 0.
func TestSigtermClientsMidDownload(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		resume bool
	}{
		{"clients finish within the grace period", 60 * time.Second, true},
		{"clients still paused when the grace period ends", 2 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sigtermMidDownload(t, tc.grace, tc.resume)
		})
	}
}

// pausedGet is a client that reads the first MiB of a body, reports it,
// waits for resume, and reads the rest.
type pausedGet struct {
	status int
	n      int64
	sum    digest.Digest
	err    error
}

func startPausedGet(url string, started chan<- struct{}, resume <-chan struct{}, res chan<- pausedGet) {
	go func() {
		resp, err := plainClient().Do(mustRequest(http.MethodGet, url))
		if err != nil {
			started <- struct{}{}
			res <- pausedGet{err: err}
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.CopyN(h, resp.Body, 1<<20)
		started <- struct{}{}
		if err == nil {
			<-resume
			var m int64
			m, err = io.Copy(h, resp.Body)
			n += m
		}
		res <- pausedGet{resp.StatusCode, n, digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), err}
	}()
}

func sigtermMidDownload(t *testing.T, grace time.Duration, resume bool) {
	reg := testreg.Start(t, testreg.Options{TLS: true})
	const repo = "library/e2e-sigterm"
	hot, hotSize := reg.PushBigBlob(t, repo, 64)
	cold, coldSize := reg.PushBigBlob(t, repo, 8)
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	p := startProxyIn(t, dir, "term", func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nshutdownGrace: %s\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n",
			addr, cacheDir, filepath.Join(dir, "ca"), grace, reg.URL, reg.CAFile)
	})
	base := p.URL + "/v2/docker.io/" + repo + "/blobs/"
	blobFile := func(d digest.Digest) string {
		return filepath.Join(cacheDir, "blobs", "sha256", d.Encoded()[:2], d.Encoded(), "data")
	}
	if status, n, sum, err := fetch(http.MethodGet, base+hot.String()); status != 200 || n != hotSize || sum != hot || err != nil {
		t.Fatalf("caching the 64 MiB blob: %d, %d bytes, %s, %v", status, n, sum, err)
	}
	waitFile(t, blobFile(hot), 20*time.Second)

	const hits = 6
	started := make(chan struct{}, hits+1)
	release := make(chan struct{})
	res := make(chan pausedGet, hits)
	for range hits {
		startPausedGet(base+hot.String(), started, release, res)
	}
	reg.SetFault(testreg.FaultBlobDelay)
	t.Cleanup(func() { reg.SetFault(testreg.FaultNone) })
	fillRes := make(chan fetchResult, 1)
	go func() {
		status, n, sum, err := fetch(http.MethodGet, base+cold.String())
		fillRes <- fetchResult{status, n, sum, err}
	}()
	for range hits {
		<-started
	}
	reg.WaitBlobsParked(t, 1)
	waitUploadSize(t, cacheDir, 0)

	p.killed = true // the exit is the test's doing
	mark := p.Mark()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLogLines(t, mark, "shutting down")
	waitRefused(t, p.Addr)
	if resume {
		close(release)
		reg.ReleaseBlobs()
	}
	select {
	case <-p.done:
	case <-time.After(grace + 20*time.Second):
		t.Fatalf("proxy still running %s after SIGTERM (grace %s)", grace+20*time.Second, grace)
	}
	if p.err != nil {
		t.Errorf("exit status after SIGTERM: %v, want 0", p.err)
	}
	if !resume {
		close(release)
	}
	for i := range hits {
		r := <-res
		complete := r.err == nil && r.status == 200 && r.n == hotSize
		switch {
		case complete && r.sum != hot:
			t.Errorf("hit client %d: a complete body with the wrong digest %s", i, r.sum)
		case resume && !complete:
			t.Errorf("hit client %d: status %d, %d of %d bytes, %v; want the whole blob", i, r.status, r.n, hotSize, r.err)
		case !resume && complete:
			t.Errorf("hit client %d: a complete body although the grace period ended first", i)
		}
	}
	f := <-fillRes
	if resume {
		if f.err != nil || f.status != 200 || f.n != coldSize || f.sum != cold {
			t.Errorf("fill client: status %d, %d bytes, %s, %v; want the whole blob", f.status, f.n, f.sum, f.err)
		}
		if got := fileDigest(t, blobFile(cold)); got != cold.String() {
			t.Errorf("the fill's blob: digest %s, want %s", got, cold)
		}
	} else {
		if f.err == nil && f.n == coldSize {
			t.Errorf("the abandoned fill's client got a complete body (status %d)", f.status)
		}
		if _, err := os.Stat(blobFile(cold)); !os.IsNotExist(err) {
			t.Errorf("the abandoned fill's blob file: %v, want none", err)
		}
		if lines := p.logLines(mark, "grace period over"); len(lines) == 0 {
			t.Errorf("no log line about the grace period:\n%s", tail(p.LogSince(mark), 30))
		}
	}
	if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 0 {
		t.Errorf("uploads left after SIGTERM: %v", files)
	}
	if got := fileDigest(t, blobFile(hot)); got != hot.String() {
		t.Errorf("the cached blob after SIGTERM: digest %s", got)
	}
}

// waitRefused waits (bounded) until a new connection to addr is refused:
// the listener closes as the shutdown starts.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections 10s after SIGTERM", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSighupUnderLoad (issue 14, faults): 16 clients with credentials pull
// a cached image (the manifest by tag and by digest, both layers, every
// body checked against its digest) without pause while the proxy reloads
// its configuration 20 times, the registry's access mode switching
// between public and proxy users only. Every reload is logged as done,
// each takes effect (an anonymous request gets 401 or 200 accordingly),
// and no client request fails.
func TestSighupUnderLoad(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := smallImage(t, reg, "library/e2e-hupload", "v1")
	dir := t.TempDir()
	users := filepath.Join(dir, "htpasswd")
	h, err := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, []byte("alice:"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mode := "public"
	cfg := func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nclientAuth:\n  htpasswd: %q\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n    access:\n      mode: %s\n",
			addr, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"), users, reg.URL, reg.CAFile, mode)
	}
	p := startProxyIn(t, dir, "hupload", cfg)
	cfgPath := filepath.Join(dir, strings.Replace(strings.TrimSuffix(filepath.Base(p.LogPath), ".log"), "proxy-", "config-", 1)+".yml")
	base := p.URL + "/v2/docker.io/library/e2e-hupload"
	type item struct {
		path, accept string
		want         digest.Digest
	}
	items := []item{
		{"/manifests/v1", img.MediaType, img.ManifestDigest},
		{"/manifests/" + img.ManifestDigest.String(), img.MediaType, img.ManifestDigest},
		{"/blobs/" + img.Layers[0].Digest.String(), "", img.Layers[0].Digest},
		{"/blobs/" + img.Layers[1].Digest.String(), "", img.Layers[1].Digest},
	}
	get := func(c *http.Client, it item, user string) (int, error) {
		req := mustRequest(http.MethodGet, base+it.path)
		if it.accept != "" {
			req.Header.Set("Accept", it.accept)
		}
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		h := sha256.New()
		if _, err := io.Copy(h, resp.Body); err != nil {
			return resp.StatusCode, err
		}
		if resp.StatusCode == 200 && "sha256:"+hex.EncodeToString(h.Sum(nil)) != it.want.String() {
			return resp.StatusCode, fmt.Errorf("%s: wrong digest", it.path)
		}
		return resp.StatusCode, nil
	}
	// Warm: everything cached before the load.
	for _, it := range items {
		if s, err := get(plainClient(), it, "alice"); s != 200 || err != nil {
			t.Fatalf("warming %s: %d %v", it.path, s, err)
		}
	}

	var (
		stop     atomic.Bool
		requests atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	for i := range 16 {
		wg.Go(func() {
			c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil}}
			defer c.CloseIdleConnections()
			for n := i; !stop.Load(); n++ {
				it := items[n%len(items)]
				s, err := get(c, it, "alice")
				requests.Add(1)
				if s != 200 || err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: status %d, %v", it.path, s, err))
					mu.Unlock()
				}
			}
		})
	}
	const reloads = 20
	for i := range reloads {
		mode = map[bool]string{true: "authenticated", false: "public"}[i%2 == 0]
		if err := os.WriteFile(cfgPath, []byte(cfg(p.Addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		mark := p.Mark()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		p.waitLogLines(t, mark, "reloaded credentials and access policy")
		want := map[string]int{"authenticated": 401, "public": 200}[mode]
		if s, err := get(plainClient(), items[0], ""); s != want || err != nil {
			t.Errorf("reload %d (%s): anonymous manifest GET %d %v, want %d", i+1, mode, s, err, want)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests by 16 clients across %d reloads", requests.Load(), reloads)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed across the reloads; first: %s", len(failures), requests.Load(), strings.Join(failures[:min(5, len(failures))], "; "))
	}
	if lines := p.logLines(0, "reloaded credentials and access policy"); len(lines) != reloads {
		t.Errorf("%d reload lines, want %d", len(lines), reloads)
	}
	if lines := p.logLines(0, "reload failed"); len(lines) != 0 {
		t.Errorf("reload failures: %q", lines)
	}
	if requests.Load() < reloads {
		t.Errorf("only %d requests: the clients did not run across the reloads", requests.Load())
	}
}
