package mirror_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

// gatedUpstream serves benchUpstream's image, but every manifest request
// waits for release (or its own context): a slow upstream that the test
// controls.
type gatedUpstream struct {
	*benchUpstream
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
}

func (u *gatedUpstream) Manifest(ctx context.Context, repo, ref string, head bool) (oci.Descriptor, io.ReadCloser, error) {
	u.calls.Add(1)
	select {
	case u.entered <- struct{}{}:
	default:
	}
	select {
	case <-u.release:
	case <-ctx.Done():
		return oci.Descriptor{}, nil, oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, ctx.Err(), "upstream request cancelled")
	}
	return u.benchUpstream.Manifest(ctx, repo, ref, head)
}

func newGatedMirror(t *testing.T) (*gatedUpstream, *httptest.Server, *testutil.SyncBuffer) {
	t.Helper()
	up := &gatedUpstream{benchUpstream: newBenchUpstream(1000), entered: make(chan struct{}, 1), release: make(chan struct{})}
	store, err := storage.New(inmemory.New(), storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.New(store, []mirror.Registry{{Host: "registry.test", Client: up}}, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	srv := httptest.NewServer(logx.AccessLog(log, m))
	t.Cleanup(srv.Close)
	return up, srv, logs
}

func getManifest(ctx context.Context, srv *httptest.Server, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), err
}

// TestSharedLookupOutlivesItsLeader: the client whose request started an
// upstream manifest lookup hangs up; the lookup goes on, once, and the
// client that joined it gets the manifest.
func TestSharedLookupOutlivesItsLeader(t *testing.T) {
	t.Parallel()
	up, srv, _ := newGatedMirror(t)
	path := "/v2/registry.test/app/manifests/" + up.mdigest.String()
	leaderCtx, hangUp := context.WithCancel(t.Context())
	leader := make(chan error, 1)
	go func() {
		_, _, err := getManifest(leaderCtx, srv, path)
		leader <- err
	}()
	<-up.entered
	type result struct {
		status int
		digest string
		err    error
	}
	joined := make(chan result, 1)
	go func() {
		s, d, err := getManifest(t.Context(), srv, path)
		joined <- result{s, d, err}
	}()
	hangUp()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("the leader's request: %v, want it cancelled", err)
	}
	close(up.release)
	r := <-joined
	if r.err != nil || r.status != 200 || r.digest != up.mdigest.String() {
		t.Fatalf("the client that joined: %d %s %v; want the manifest", r.status, r.digest, r.err)
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("upstream was asked %d times, want once", n)
	}
}

// TestSharedLookupWaiterLeavesAtOnce: a client that gives up while it
// waits for a lookup another request started is answered at once (its
// access line is written before upstream answers), and the lookup still
// serves the others.
func TestSharedLookupWaiterLeavesAtOnce(t *testing.T) {
	t.Parallel()
	up, srv, logs := newGatedMirror(t)
	path := "/v2/registry.test/app/manifests/" + up.mdigest.String()
	first := make(chan int, 1)
	go func() {
		s, _, _ := getManifest(t.Context(), srv, path)
		first <- s
	}()
	<-up.entered
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := getManifest(ctx, srv, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the waiter: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "status=504") {
		if time.Now().After(deadline) {
			t.Fatalf("the waiter's handler did not return while upstream was still asked:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(up.release)
	if s := <-first; s != 200 {
		t.Fatalf("the first client: %d", s)
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("upstream was asked %d times, want once", n)
	}
}
