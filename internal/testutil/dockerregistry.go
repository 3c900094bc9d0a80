package testutil

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// dockerRegistryConfig is distribution 2.8's configuration: plain HTTP on
// loopback, filesystem storage in a temp dir, no auth, quiet logs.
const dockerRegistryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
health:
  storagedriver:
    enabled: false
`

// DockerRegistry is Debian's docker-registry (distribution 2.8, which has
// no referrers API) on a loopback port, behind a counting reverse proxy:
// URL is the proxy's, which records every request. It is stopped at the
// end of the test.
type DockerRegistry struct {
	// URL is http://127.0.0.1:<port>; Host is its host:port.
	URL, Host string

	RequestLog

	front *http.Server
	cmd   *exec.Cmd
	exit  chan struct{}
	log   string
	once  sync.Once
}

// StartDockerRegistry starts docker-registry with an empty storage. It
// fails (never skips) when docker-registry is not installed.
func StartDockerRegistry(t testing.TB) *DockerRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed: run scripts/install-test-deps.sh")
	}
	dir := t.TempDir()
	inner := net.JoinHostPort("127.0.0.1", fmt.Sprint(FreePort(t)))
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(dockerRegistryConfig, filepath.Join(dir, "data"), inner)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &DockerRegistry{log: filepath.Join(dir, "registry.log"), exit: make(chan struct{})}
	if err := r.startProcess(bin, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	if err := r.serveFront(inner); err != nil {
		t.Fatal(err)
	}
	if err := r.waitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *DockerRegistry) startProcess(bin, cfg string) error {
	logf, err := os.Create(r.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	r.cmd = exec.Command(bin, "serve", cfg)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	go func() {
		_ = r.cmd.Wait() // killed on purpose
		close(r.exit)
	}()
	return nil
}

// serveFront starts the counting reverse proxy to inner on a free port.
func (r *DockerRegistry) serveFront(inner string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.Host = ln.Addr().String()
	r.URL = "http://" + r.Host
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: inner})
	rp.ErrorLog = log.New(io.Discard, "", 0) // a stopped registry is a test's doing
	r.front = &http.Server{Handler: r.Counted(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.front.Serve(ln) }() // ends with Stop
	return nil
}

// waitReady waits until GET /v2/ answers 200 through the front.
func (r *DockerRegistry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.ResetCounts()
				return nil
			}
		}
		select {
		case <-r.exit:
			out, _ := os.ReadFile(r.log)
			return fmt.Errorf("docker-registry exited at start:\n%s", out)
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("docker-registry on %s does not answer", r.URL), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop takes the registry away: its port refuses connections and the
// process is killed.
func (r *DockerRegistry) Stop() {
	r.once.Do(func() {
		_ = r.front.Close()
		_ = r.cmd.Process.Kill() // it may have exited
		<-r.exit
	})
}

// PushBlob uploads data to repo (POST, then a monolithic PUT ?digest=)
// and returns its digest.
func (r *DockerRegistry) PushBlob(t testing.TB, repo string, data []byte) string {
	t.Helper()
	return pushBlob(t, r.URL, repo, data)
}

// PushManifest PUTs a manifest under ref (a tag or its digest) and
// returns its digest.
func (r *DockerRegistry) PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) string {
	t.Helper()
	return pushManifest(t, r.URL, repo, ref, mediaType, body)
}

func pushBlob(t testing.TB, base, repo string, data []byte) string {
	t.Helper()
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	resp := send(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted)
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("upload without Location: %v", err)
	}
	q := loc.Query()
	q.Set("digest", d)
	loc.RawQuery = q.Encode()
	send(t, http.MethodPut, loc.String(), "application/octet-stream", data, http.StatusCreated)
	return d
}

func pushManifest(t testing.TB, base, repo, ref, mediaType string, body []byte) string {
	t.Helper()
	send(t, http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, mediaType, body, http.StatusCreated)
	return fmt.Sprintf("sha256:%x", sha256.Sum256(body))
}

func send(t testing.TB, method, u, contentType string, body []byte, want int) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, u, resp.StatusCode, want, msg)
	}
	return resp
}
