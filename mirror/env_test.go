package mirror_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws" // the "s3" backend
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/sirupsen/logrus"
)

// upstreamSpec names one real test registry and the host it is served as.
type upstreamSpec struct {
	host string
	reg  *testreg.Registry
	// endpoint, when reg is nil, is the URL of another real registry
	// (plain HTTP).
	endpoint string
}

// env is a mirror in front of real registries, served over HTTP.
type env struct {
	t      *testing.T
	srv    *httptest.Server
	mirror *mirror.Mirror
	store  *storage.Store
	root   string             // filesystem root, "" for inmemory
	s3     *testutil.S3Server // the "s3" backend's server and bucket
	logs   *testutil.SyncBuffer
	clock  *testutil.FakeClock
	life   *cache.Lifecycle // with envOptions.lifecycle
}

type envOptions struct {
	backend string // "inmemory" (default), "filesystem" or "s3" (versitygw)
	tagTTL  time.Duration
	creds   auth.Credentials
	root    string // filesystem root to use (default: a temp dir)
	// observer and minRemaining set the Options of the same names.
	observer     mirror.Observer
	minRemaining int64
	downHold     time.Duration
	// revalidateWait sets Options.RevalidateWait; readTimeout the
	// upstream clients' ReadTimeout (default 20s).
	revalidateWait, readTimeout time.Duration
	// fetcher sets Options.Fetcher.
	fetcher mirror.Fetcher
	// wrap, when set, wraps the storage driver (fault injection).
	wrap func(storagedriver.StorageDriver) storagedriver.StorageDriver
	// access and redirect set Options.Access and Options.Redirect.
	access   mirror.Access
	redirect bool
	// cache sets Options.Cache; lifecycle, instead, runs a real
	// cache.Lifecycle over the env's storage (with a MemIndex).
	cache     mirror.Cache
	lifecycle bool
	// evict are the lifecycle's bounds (with lifecycle).
	evict storage.EvictOptions
	// tune, when set, changes the Options last.
	tune func(*mirror.Options)
	// allowNetworks sets the upstream clients' AllowNetworks (internal
	// networks redirects and token realms may reach).
	allowNetworks []netip.Prefix
	// maxFills and maxFillsPerUpstream set the Options of those names.
	maxFills, maxFillsPerUpstream int
}

// newEnvWithCreds is a mirror of one upstream that needs credentials.
func newEnvWithCreds(t *testing.T, host string, reg *testreg.Registry, user, pass string) *env {
	return newEnv(t, envOptions{creds: auth.Credentials{Username: user, Password: pass}}, upstreamSpec{host: host, reg: reg})
}

func newEnv(t *testing.T, opts envOptions, ups ...upstreamSpec) *env {
	t.Helper()
	e := &env{t: t, logs: &testutil.SyncBuffer{}, clock: testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	var err error
	wrap := opts.wrap
	if wrap == nil {
		wrap = func(d storagedriver.StorageDriver) storagedriver.StorageDriver { return d }
	}
	switch opts.backend {
	case "filesystem":
		e.root = opts.root
		if e.root == "" {
			e.root = t.TempDir()
		}
		e.store, err = storage.New(wrap(filesystem.New(filesystem.DriverParameters{RootDirectory: e.root, MaxThreads: 100})), storage.Options{LocalRoot: e.root})
	case "s3":
		e.s3 = s3Server.Get(t)
		var d storagedriver.StorageDriver
		if d, err = factory.Create(t.Context(), "s3", e.s3.DriverParams("/cache")); err != nil {
			t.Fatal(err)
		}
		e.store, err = storage.New(wrap(d), storage.Options{SpoolDir: t.TempDir()})
	default:
		e.store, err = storage.New(wrap(inmemory.New()), storage.Options{SpoolDir: t.TempDir()})
	}
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokenCache(&http.Client{Timeout: 10 * time.Second}, auth.TokenOptions{})
	readTimeout := 20 * time.Second
	if opts.readTimeout > 0 {
		readTimeout = opts.readTimeout
	}
	var regs []mirror.Registry
	for _, u := range ups {
		endpoint, caFile := u.endpoint, ""
		if u.reg != nil {
			endpoint, caFile = u.reg.URL, u.reg.CAFile
		}
		client, err := upstream.New(upstream.Options{
			Host:           u.host,
			Endpoint:       endpoint,
			CAFile:         caFile,
			ConnectTimeout: 5 * time.Second,
			ReadTimeout:    readTimeout,
			SendTimeout:    20 * time.Second,
			Tokens:         tokens,
			Credentials:    opts.creds,
			AllowNetworks:  opts.allowNetworks,
			Log:            logx.From,
			Now:            e.clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, mirror.Registry{Host: u.host, Client: client})
	}
	mopts := mirror.Options{Now: e.clock.Now, FillTimeout: time.Minute, Observer: opts.observer, RateLimitMinRemaining: opts.minRemaining, DownHold: opts.downHold, Fetcher: opts.fetcher, Cache: opts.cache,
		Access: opts.access, Redirect: opts.redirect, RevalidateWait: opts.revalidateWait,
		MaxFills: opts.maxFills, MaxFillsPerUpstream: opts.maxFillsPerUpstream}
	if opts.tagTTL > 0 {
		mopts.TagTTL = func(string) time.Duration { return opts.tagTTL }
	}
	var lc *cache.Lifecycle
	if opts.lifecycle {
		if lc, err = cache.Open(t.Context(), e.store, storage.NewMemIndex(), cache.Options{Evict: opts.evict}); err != nil {
			t.Fatal(err)
		}
		mopts.Cache, e.life = lc, lc
	}
	if opts.tune != nil {
		opts.tune(&mopts)
	}
	e.mirror, err = mirror.New(e.store, regs, mopts)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(e.logs)
	log.SetLevel(logrus.DebugLevel)
	e.srv = httptest.NewServer(logx.AccessLog(log, e.mirror))
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.mirror.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
		if lc != nil {
			if err := lc.Close(); err != nil {
				t.Errorf("closing the cache lifecycle: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("mirror log:\n%s", e.logs.String())
		}
	})
	return e
}

// do sends a request to the mirror and returns the response with its body.
func (e *env) do(method, path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	resp, body, err := e.try(method, path, hdr...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, body
}

// try is do that returns body read errors (cut responses) instead of failing.
func (e *env) try(method, path string, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, nil)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if code != "" && !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Fatalf("body %s does not carry code %s", body, code)
	}
}

// served counts the upstream requests of method and kind that were
// answered (not 401 challenges of the token flow).
func served(reg *testreg.Registry, method, kind string) int {
	n := 0
	for _, r := range reg.Requests() {
		if r.Method == method && r.Kind == kind && r.Status != http.StatusUnauthorized {
			n++
		}
	}
	return n
}
