package mirror_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/sirupsen/logrus"
)

// TestOutOfFileDescriptors: when the process runs out of file descriptors
// (EMFILE opening a cached blob), each of 1000 pulls of the cached blob
// answers 503 UNAVAILABLE saying so, with Retry-After, without asking
// upstream, and the log gets one line for all of them, then one line with
// the count of those it dropped once the interval passed: not one or two
// lines per request.
func TestOutOfFileDescriptors(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	b := reg.PushBlob(t, "app", testreg.RandomLayer(t, 10_000))
	fd := &testutil.FaultDriver{Match: "/blobs/"}
	wrap := func(sd storagedriver.StorageDriver) storagedriver.StorageDriver { fd.StorageDriver = sd; return fd }
	e := newEnv(t, envOptions{backend: "filesystem", wrap: wrap}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	if resp, body := e.do("GET", path); resp.StatusCode != 200 || sha(body) != b.Digest.String() {
		t.Fatalf("the first GET: %d", resp.StatusCode)
	}
	e.drain()
	fetched := served(reg, "GET", "blob")

	var logs testutil.SyncBuffer
	log := logrus.New()
	log.SetOutput(&logs)
	clock := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	logx.SetClock(log, clock.Now)
	srv := httptest.NewServer(logx.AccessLog(log, e.mirror))
	defer srv.Close()
	fd.Fail("Reader", syscall.EMFILE)
	get := func() {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var env oci.Envelope
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != oci.CodeUnavailable ||
			!strings.Contains(env.Errors[0].Message, "out of file descriptors") {
			t.Fatalf("GET out of file descriptors: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	for range 1000 {
		get()
	}
	warnings := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") {
				out = append(out, l)
			}
		}
		return out
	}
	if w := warnings(); len(w) != 1 || !strings.Contains(w[0], "out of file descriptors") {
		t.Fatalf("%d warning lines for 1000 requests, want one naming the cause:\n%s", len(w), strings.Join(w, "\n"))
	}
	clock.Advance(2 * time.Minute)
	get()
	if w := warnings(); len(w) != 2 || !strings.Contains(w[1], "suppressed=999") {
		t.Fatalf("after the interval: %d warning lines, want a second one counting the 999 dropped:\n%s", len(w), strings.Join(w, "\n"))
	}
	if n := served(reg, "GET", "blob"); n != fetched {
		t.Fatalf("upstream was asked for the blob %d more times", n-fetched)
	}
}

// TestRepeatedLinkFailuresLogOnce: when repository links cannot be
// written (a full disk), every hit of a blob through a repository it is
// not linked to yet fails to link it again; the log gets one line for all
// of them, not one per request, and each request is still served.
func TestRepeatedLinkFailuresLogOnce(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 10_000)
	b := reg.PushBlob(t, "app", layer)
	reg.PushBlob(t, "other", layer)
	fd := &testutil.FaultDriver{Match: "/_links/"}
	wrap := func(sd storagedriver.StorageDriver) storagedriver.StorageDriver { fd.StorageDriver = sd; return fd }
	e := newEnv(t, envOptions{backend: "filesystem", wrap: wrap}, upstreamSpec{host: "registry.test", reg: reg})
	if resp, _ := e.do("GET", "/v2/registry.test/app/blobs/"+b.Digest.String()); resp.StatusCode != 200 {
		t.Fatalf("the first GET: %d", resp.StatusCode)
	}
	e.drain()
	fd.Fail("PutContent", syscall.ENOSPC)

	var logs testutil.SyncBuffer
	log := logrus.New()
	log.SetOutput(&logs)
	logx.SetClock(log, testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).Now)
	srv := httptest.NewServer(logx.AccessLog(log, e.mirror))
	defer srv.Close()
	for i := range 20 {
		resp, err := srv.Client().Get(srv.URL + "/v2/registry.test/other/blobs/" + b.Digest.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || sha(body) != b.Digest.String() {
			t.Fatalf("GET %d through the unlinked repository: %d", i, resp.StatusCode)
		}
	}
	if n := strings.Count(logs.String(), "linking blob to repository"); n != 1 {
		t.Fatalf("%d lines for 20 failed links, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Fatalf("the line does not give the cause:\n%s", logs.String())
	}
}
