package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/health"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

// app is the assembled proxy: the parts build made, wired together
// (docs/architecture.md, "The picture").
type app struct {
	log     *logrus.Logger
	store   *storage.Store
	life    *cache.Lifecycle
	mirror  *mirror.Mirror
	shim    *shim.Shim
	setup   http.Handler
	metrics *metrics.Metrics
	health  *health.Checker
	// handler is the front: CONNECT and absolute-form requests to the
	// shim, everything else to the root endpoints.
	handler http.Handler
	// ups are the upstream clients, credentials and access policy;
	// reload swaps the latter two (SIGHUP).
	ups    *upstreams
	reload *reloader
	// lock holds the cache directory's flock while the process runs.
	lock *os.File
	// cluster is what the replicas share through Redis; nil alone.
	cluster *replicas
	// out holds the proxy's listeners (upstream connections never reach
	// them; serveOn and serveMetrics add them) and its Via marker.
	out outbound
}

// build assembles every part from cfg, in order: storage, upstreams and
// access, the cache lifecycle, the mirror, the shim and the front. On
// error whatever was opened is closed again (the cache directory's lock
// included).
func build(ctx context.Context, cfg *config.Config, log *logrus.Logger) (_ *app, err error) {
	a := &app{log: log, out: outbound{self: &netguard.Self{}, loop: netguard.NewLoop()}}
	defer func() {
		if err != nil {
			if cerr := a.close(); cerr != nil {
				log.WithError(cerr).Warn("closing what start-up had opened")
			}
		}
	}()
	if err = a.openStore(ctx, cfg); err != nil {
		return nil, err
	}
	tokens := newTokens(cfg)
	a.metrics = newMetrics(cfg, tokens)
	if a.ups, err = newUpstreams(cfg, tokens, a.metrics, a.out); err != nil {
		return nil, err
	}
	a.ups.logServed(cfg, log)
	if a.cluster, err = openReplicas(ctx, cfg, log, a.metrics); err != nil {
		return nil, err
	}
	if a.life, err = openCache(ctx, cfg, log, a.store, a.metrics, a.cluster); err != nil {
		return nil, err
	}
	if err = a.buildMirror(cfg); err != nil {
		return nil, err
	}
	token, err := adminToken(cfg)
	if err != nil {
		return nil, err
	}
	admin := adminGC(a.life, token)
	page := newStatusPage(cfg, a.mirror, a.life, a.metrics, a.cluster)
	tracked := refuseLoops(a.out.loop, page.Track(a.mirror))
	if a.shim, a.setup, err = buildShim(cfg, log, tracked, a.ups, a.mirror, a.metrics); err != nil {
		return nil, err
	}
	a.health = newHealth(a.store, a.life, a.cluster)
	a.handler = a.front(rootHandler(tracked, page, a.setup, admin, a.metrics, a.cluster.peerHandler(a.mirror)))
	a.reload = newReloader(cfg, a.ups)
	if err = serveMetrics(ctx, cfg, log, a.metrics, a.health.Handler(), admin, a.out.self); err != nil {
		return nil, err
	}
	return a, nil
}

// openStore creates the storage driver from cfg.Storage and clears uploads
// that fills abandoned (a crash): all of them when this process holds the
// filesystem driver's cache directory alone, else only those idle longer
// than a fill may take (other processes may share the storage); and the
// temporary files of writes that a crash cut short.
func (a *app) openStore(ctx context.Context, cfg *config.Config) (err error) {
	var root string
	if a.store, root, err = newStore(ctx, cfg); err != nil {
		return err
	}
	name, params := cfg.StorageDriver()
	age := time.Duration(cfg.FillTimeout)
	if root != "" {
		alone, err := a.lockCacheDir(root)
		if err != nil {
			return err
		}
		if alone {
			age = 0
		}
	}
	n, err := a.store.PurgeUploads(ctx, age)
	if err != nil {
		a.log.WithError(err).Warn("clearing abandoned uploads")
	} else if n > 0 {
		a.log.WithField("count", n).Info("cleared uploads abandoned by an earlier run (nothing partial is ever served)")
	}
	// A driver's temporary file lives for one write: a minute is old.
	if n, err := a.store.PurgeTemp(ctx, min(age, time.Minute)); err != nil {
		a.log.WithError(err).Warn("clearing temporary files")
	} else if n > 0 {
		a.log.WithField("count", n).Info("cleared temporary files left by writes of an earlier run")
	}
	purgeDriverUploads(ctx, a.log, name, params, time.Duration(cfg.FillTimeout))
	a.log.WithField("driver", name).WithField("cacheDir", cfg.CacheDir).Info("cache storage ready")
	return nil
}

// newStore creates the storage driver of cfg.Storage and the cache on it;
// root is the filesystem driver's directory ("" for other drivers), where
// uploads double as the spool.
func newStore(ctx context.Context, cfg *config.Config) (store *storage.Store, root string, err error) {
	name, params := cfg.StorageDriver()
	if params == nil {
		params = map[string]any{}
	}
	d, err := factory.Create(ctx, name, params)
	if err != nil {
		return nil, "", &configError{fmt.Errorf("storage.%s: %w", name, err)}
	}
	opts := storage.Options{SpoolDir: cfg.CacheDir + "/spool"}
	if name == "filesystem" {
		root, _ = params["rootdirectory"].(string)
		opts = storage.Options{LocalRoot: root}
	}
	if store, err = storage.New(d, opts); err != nil {
		return nil, "", &configError{fmt.Errorf("storage.%s: %w", name, err)}
	}
	return store, root, nil
}

// lockCacheDir takes the cache directory's lock, and reports whether this
// process is alone on it. A lock that fails for another reason than a
// holder (a file system without locks) is logged with its cause; the
// process then clears only old uploads, as beside another one.
func (a *app) lockCacheDir(root string) (alone bool, err error) {
	lock, alone, err := storage.LockDir(root)
	switch {
	case err != nil && errors.Is(err, os.ErrNotExist), err != nil && errors.Is(err, os.ErrPermission):
		return false, &configError{err}
	case err != nil:
		a.log.WithError(err).Warn("cannot lock the cache directory: only uploads idle for fillTimeout are cleared")
	case !alone:
		a.log.WithField("cacheDir", root).Warn("another process holds the cache directory: only uploads idle for fillTimeout are cleared")
	default:
		a.lock = lock
	}
	return alone, nil
}

// buildMirror assembles the mirror from the upstream clients, the access
// policy, the cache lifecycle and the metrics.
func (a *app) buildMirror(cfg *config.Config) error {
	tagTTL := func(string) time.Duration { return 0 }
	if cfg.ManifestCache.Enabled {
		tagTTL = cfg.ManifestCache.TTL
	}
	m, err := mirror.New(a.store, a.ups.mirrorRegistries(), mirror.Options{
		TagTTL:                tagTTL,
		FillTimeout:           time.Duration(cfg.FillTimeout),
		DownHold:              downHold(cfg),
		RevalidateWait:        revalidateWait(cfg),
		Access:                a.ups.guard,
		Cache:                 a.life,
		Fetcher:               a.cluster.fetcherOf(),
		Observer:              a.metrics,
		RateLimitMinRemaining: int64(cfg.RateLimit.MinRemaining),
		Redirect:              cfg.StorageRedirect,
		TagListMaxBytes:       int64(cfg.TagList.MaxBytes),
		TagListMaxTags:        cfg.TagList.MaxTags,
		MaxFills:              cfg.MaxFills,
		MaxFillsPerUpstream:   cfg.MaxFillsPerUpstream,
	})
	if err != nil {
		return &configError{err}
	}
	a.mirror = m
	if cfg.AllowPush {
		a.log.Warn("ALLOW_PUSH=true: pushes through the HTTPS_PROXY shim pass to the real registries; mirror paths (/v2/<registry>/…) still refuse them")
	}
	return nil
}

// close releases what build opened: the shim's server of intercepted
// connections, the cache lifecycle (its index), the replicas' Redis
// connection and the cache directory's lock.
func (a *app) close() error {
	var errs []error
	if a.shim != nil {
		errs = append(errs, a.shim.Close())
	}
	if a.life != nil {
		errs = append(errs, a.life.Close())
	}
	errs = append(errs, a.cluster.close())
	a.cluster = nil
	if a.lock != nil {
		errs = append(errs, a.lock.Close())
		a.lock = nil
	}
	return errors.Join(errs...)
}

// revalidateWait maps manifestCache.revalidateWait (0: wait for
// upstream) to mirror.Options.RevalidateWait (0 is the default there,
// negative waits).
func revalidateWait(cfg *config.Config) time.Duration {
	if cfg.ManifestCache.RevalidateWait == 0 {
		return -1
	}
	return time.Duration(cfg.ManifestCache.RevalidateWait)
}

// downHold maps outageHold (0: off) to mirror.Options.DownHold (0 is the
// default there, negative off).
func downHold(cfg *config.Config) time.Duration {
	if cfg.OutageHold == 0 {
		return -1
	}
	return time.Duration(cfg.OutageHold)
}
