package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// app is the assembled proxy.
type app struct {
	handler http.Handler
	mirror  *mirror.Mirror
	store   *storage.Store
	shim    *shim.Shim
	// lock holds the cache directory's flock while the process runs.
	lock *os.File
	life *lifecycle
	// metrics are the process's Prometheus metrics (docs/metrics.md).
	metrics *metrics.Metrics
	// reload swaps the credentials and the access policy (SIGHUP).
	reload *reloader
}

// build assembles storage, upstream clients and the mirror from cfg.
func build(ctx context.Context, cfg *config.Config, log *logrus.Logger) (*app, error) {
	var lock *os.File
	store, err := openStore(ctx, cfg, log, &lock)
	if err != nil {
		return nil, err
	}
	tokens := auth.NewTokenCache(&http.Client{Timeout: time.Duration(cfg.Upstream.ReadTimeout)}, auth.TokenOptions{})
	mt := newMetrics(cfg, tokens)
	kc, err := newKeychain(cfg)
	if err != nil {
		return nil, &configError{err}
	}
	src := newSwapSource(kc)
	var regs []mirror.Registry
	clients := map[string]*upstream.Registry{}
	forwards := map[string]forwardRoute{}
	for _, rc := range cfg.Upstreams() {
		client, err := upstream.New(upstream.Options{
			Host:           rc.Host,
			Endpoint:       rc.Endpoint,
			CAFile:         rc.CAFile,
			Insecure:       rc.Insecure,
			Credentials:    auth.Credentials{Username: rc.Username, Password: rc.Password},
			TokenRealms:    rc.TokenRealms,
			VerifySSL:      cfg.Upstream.VerifySSL,
			ForceHTTP11:    cfg.Upstream.ForceHTTP11,
			ConnectTimeout: time.Duration(cfg.Upstream.ConnectTimeout),
			ReadTimeout:    time.Duration(cfg.Upstream.ReadTimeout),
			SendTimeout:    time.Duration(cfg.Upstream.SendTimeout),
			UserAgent:      "container-registry-proxy/" + Version,
			Tokens:         tokens,
			Keychain:       src,
			Log:            logx.From,
			Observer:       mt,
		})
		if err != nil {
			return nil, &configError{fmt.Errorf("registries[%s]: %w", rc.Host, err)}
		}
		regs = append(regs, mirror.Registry{Host: rc.Host, Namespace: rc.Namespace, Client: client})
		clients[oci.CanonicalHost(rc.Host)] = client
		fr, err := newForwardRoute(client.Endpoint(), rc.CAFile, rc.Insecure || !cfg.Upstream.VerifySSL)
		if err != nil {
			return nil, &configError{fmt.Errorf("registries[%s]: %w", rc.Host, err)}
		}
		forwards[oci.CanonicalHost(rc.Host)] = fr
	}
	policy, err := buildPolicy(cfg, kc, clients)
	if err != nil {
		return nil, &configError{err}
	}
	rl := newReloader(cfg, src, clients, policy)
	for _, rc := range cfg.Upstreams() {
		host := oci.CanonicalHost(rc.Host)
		log.WithFields(logrus.Fields{
			"upstream":    rc.Host,
			"endpoint":    clients[host].Endpoint(),
			"paths":       fmt.Sprintf("/v2/%s/<repo>/… or /v2/<repo>/…?ns=%s", rc.Namespace, url.QueryEscape(rc.Host)),
			"credentials": hasCredentials(cfg, kc, rc),
			"access":      policy.Mode(host).String(),
		}).Info("serving registry")
	}
	if cfg.DockerHub {
		log.Info("Docker Hub is the default upstream: /v2/<repo>/… without a registry prefix (dockerd registry-mirrors)")
	}
	tagTTL := func(string) time.Duration { return 0 }
	if cfg.ManifestCache.Enabled {
		tagTTL = cfg.ManifestCache.TTL
	}
	var mp atomic.Pointer[mirror.Mirror]
	life, err := openLifecycle(ctx, cfg, log, store, func(d digest.Digest) bool {
		m := mp.Load()
		return m != nil && m.Pinned(d)
	}, mt)
	if err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			life.Close()
		}
	}()
	mopts := mirror.Options{
		TagTTL:      tagTTL,
		FillTimeout: time.Duration(cfg.FillTimeout),
		DownHold:    downHold(cfg),
		Access:      rl.check,
		Base:        rl.checkBase,
	}
	life.hooks(&mopts)
	instrumentMirror(&mopts, cfg, mt)
	m, err := mirror.New(store, regs, mopts)
	if err != nil {
		return nil, &configError{err}
	}
	mp.Store(m)
	if cfg.AllowPush {
		log.Warn("ALLOW_PUSH=true: pushes through the HTTPS_PROXY shim pass to the real registries; mirror paths (/v2/<registry>/…) still refuse them")
	}
	page := newStatusPage(cfg, m, life, mt)
	sh, err := buildShim(cfg, log, m, page.Track(m), page, forwards, rl.policy, adminGC(life), mt)
	if err != nil {
		return nil, err
	}
	if err := serveMetrics(ctx, cfg, log, mt, newHealth(store, life).Handler()); err != nil {
		return nil, err
	}
	built = true
	return &app{handler: withMetrics(sh, mt), metrics: mt, mirror: m, store: store, shim: sh, lock: lock, life: life, reload: rl}, nil
}

// openStore creates the storage driver from cfg.Storage and clears uploads
// that fills abandoned (a crash) longer ago than the fill timeout.
// held receives the cache directory's lock file, to keep open while the
// process runs.
func openStore(ctx context.Context, cfg *config.Config, log *logrus.Logger, held **os.File) (*storage.Store, error) {
	name, params := cfg.StorageDriver()
	if params == nil {
		params = map[string]any{}
	}
	d, err := factory.Create(ctx, name, params)
	if err != nil {
		return nil, &configError{fmt.Errorf("storage.%s: %w", name, err)}
	}
	opts := storage.Options{SpoolDir: cfg.CacheDir + "/spool"}
	if name == "filesystem" {
		root, _ := params["rootdirectory"].(string)
		opts = storage.Options{LocalRoot: root}
	}
	store, err := storage.New(d, opts)
	if err != nil {
		return nil, &configError{fmt.Errorf("storage.%s: %w", name, err)}
	}
	// Uploads that no fill owns any more: all of them when this process
	// holds the cache directory alone (a crash left them), else only
	// those idle longer than a fill may take (other processes may share
	// the storage).
	age := time.Duration(cfg.FillTimeout)
	if name == "filesystem" {
		lock, alone, err := lockCacheDir(opts.LocalRoot)
		if err != nil {
			return nil, &configError{err}
		}
		if alone {
			age = 0
			*held = lock
		} else {
			log.WithField("cacheDir", opts.LocalRoot).Warn("another process holds the cache directory: only uploads idle for fillTimeout are cleared")
		}
	}
	n, err := store.PurgeUploads(ctx, age)
	if err != nil {
		log.WithError(err).Warn("clearing abandoned uploads")
	} else if n > 0 {
		log.WithField("count", n).Info("cleared uploads abandoned by an earlier run (nothing partial is ever served)")
	}
	log.WithField("driver", name).WithField("cacheDir", cfg.CacheDir).Info("cache storage ready")
	return store, nil
}

// rootHandler serves the mirror under /v2/, the CA and setup endpoints,
// and the banner and health endpoints beside them.
func rootHandler(m http.Handler, setup, gc, page http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/_admin/gc", gc)
	mux.Handle("/ca.crt", setup)
	mux.Handle("/setup/", setup)
	mux.Handle("/v2/", m)
	mux.Handle("/v2", m)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			status, body := oci.EnvelopeFor(oci.Errorf(http.StatusNotFound, oci.CodeUnsupported, "not found: %s", r.URL.Path))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write(body)
			return
		}
		page.ServeHTTP(w, r)
	})
	return mux
}

// downHold maps outageHold (0: off) to mirror.Options.DownHold (0 is the
// default there, negative off).
func downHold(cfg *config.Config) time.Duration {
	if cfg.OutageHold == 0 {
		return -1
	}
	return time.Duration(cfg.OutageHold)
}
