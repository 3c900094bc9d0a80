package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// lifecycle is the cache's index and eviction, wired to the mirror.
type lifecycle struct {
	idx    storage.Index
	ev     *storage.Evictor
	opts   storage.EvictOptions
	now    func() time.Time
	cancel context.CancelFunc
	done   chan struct{}
	log    *logrus.Logger
	// rebuilding is set while the index is rebuilt from the storage in
	// the background: /readyz answers 503 meanwhile.
	rebuilding atomic.Bool
}

// indexPath is where the embedded index lives: beside the cached data
// for the filesystem driver, in the local cache directory otherwise.
func indexPath(cfg *config.Config) string {
	name, params := cfg.StorageDriver()
	if name == "filesystem" {
		if root, _ := params["rootdirectory"].(string); root != "" {
			return filepath.Join(root, "index.db")
		}
	}
	return filepath.Join(cfg.CacheDir, "index.db")
}

// evictOptions are CACHE_MAX_SIZE, CACHE_MIN_FREE and CACHE_INACTIVE_TIME.
func evictOptions(cfg *config.Config, log *logrus.Logger) storage.EvictOptions {
	opts := storage.EvictOptions{
		MaxSize:  int64(cfg.Cache.MaxSize),
		MinFree:  int64(cfg.Cache.MinFree),
		Inactive: time.Duration(cfg.Cache.InactiveTime),
	}
	if log != nil {
		opts.Log = func(msg string, fields map[string]any) { log.WithFields(fields).Info(msg) }
	}
	name, params := cfg.StorageDriver()
	if root, _ := params["rootdirectory"].(string); name == "filesystem" && root != "" {
		opts.FreeSpace = storage.DiskFree(root)
	} else if opts.MinFree > 0 {
		// Free space is a local disk's: evicting from a bucket (or from
		// memory) would not raise it. The default 1g must not stop such a
		// configuration from starting.
		if log != nil {
			log.WithField("minFree", cfg.Cache.MinFree.String()).Infof("CACHE_MIN_FREE (cache.minFree) measures the filesystem driver's disk: not applied to storage.%s", name)
		}
		opts.MinFree = 0
	}
	return opts
}

// openLifecycle opens (or creates) the index, repairs it against the
// storage (rebuilding it in the background when it is new or was
// damaged) and starts eviction. pinned is consulted for content in use.
func openLifecycle(ctx context.Context, cfg *config.Config, log *logrus.Logger, store *storage.Store, pinned func(digest.Digest) bool, mt *metrics.Metrics) (*lifecycle, error) {
	path := indexPath(cfg)
	bi, err := storage.OpenBoltIndex(path, storage.BoltOptions{Log: func(msg string, f map[string]any) { log.WithFields(f).Warn(msg) }})
	if errors.Is(err, storage.ErrIndexLocked) {
		return nil, &configError{fmt.Errorf("cache index %s is held by another container-registry-proxy: one server per cache directory", path)}
	}
	if err != nil {
		return nil, fmt.Errorf("cache index %s: %w", path, err)
	}
	l := &lifecycle{idx: bi, opts: evictOptions(cfg, log), now: time.Now, log: log}
	l.opts.Pinned = pinned
	instrumentLifecycle(l, mt)
	if l.ev, err = storage.NewEvictor(store, bi, l.opts); err != nil {
		bi.Close()
		return nil, &configError{err}
	}
	if bi.NeedsRebuild() {
		if aside := bi.MovedAside(); aside != "" {
			log.WithField("movedAside", aside).Warn("cache index was damaged; rebuilding it from the storage while serving")
		} else {
			log.Info("building the cache index from the storage while serving")
		}
		l.rebuilding.Store(true)
		go func() {
			defer l.rebuilding.Store(false)
			start := time.Now()
			rec, err := store.RebuildIndex(context.WithoutCancel(ctx), bi, nil)
			if errors.Is(err, context.Canceled) {
				return
			}
			if err != nil {
				log.WithError(err).Error("rebuilding the cache index")
				return
			}
			log.WithFields(logrus.Fields{"added": rec.Added, "removed": rec.Removed, "dur_ms": time.Since(start).Milliseconds()}).Info("cache index rebuilt")
			l.ev.Kick()
		}()
	} else {
		rec, err := store.Reconcile(ctx, bi)
		if err != nil {
			log.WithError(err).Warn("checking the cache index against the storage")
		} else if rec.Added+rec.Removed > 0 {
			log.WithFields(logrus.Fields{"added": rec.Added, "removed": rec.Removed}).Warn("cache index repaired: it disagreed with the storage (after a crash)")
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		l.ev.Run(runCtx)
	}()
	bytes, count, _ := bi.Usage(ctx)
	log.WithFields(logrus.Fields{"bytes": bytes, "objects": count, "maxSize": cfg.Cache.MaxSize.String(), "minFree": config.Size(l.opts.MinFree).String(), "inactiveTime": cfg.Cache.InactiveTime.String()}).Info("cache bounds in force")
	return l, nil
}

// hooks are the mirror options that keep the index current.
func (l *lifecycle) hooks(o *mirror.Options) {
	o.Keep = l.ev.Fits
	o.BeforeCommit = func(ctx context.Context, size int64) {
		if _, err := l.ev.MakeRoom(ctx, size); err != nil {
			l.log.WithError(err).Warn("making room in the cache")
		}
	}
	o.OnCommit = func(ctx context.Context, c mirror.Committed) {
		now := l.now()
		e := storage.IndexEntry{Digest: c.Digest, Size: c.Size, Kind: storage.KindBlob, Added: now, LastAccess: now,
			Repos: []string{storage.RepoKey(c.Namespace, c.Repo)}}
		if c.Body != nil {
			e.Kind = storage.KindManifest
			e.Children, _ = storage.ManifestChildren(c.Body)
		}
		if err := l.idx.Put(ctx, e); err != nil {
			l.log.WithError(err).Warn("recording in the cache index")
		}
	}
	o.OnLink = func(ctx context.Context, d digest.Digest, ns, repo string) {
		_ = l.idx.AddRepo(ctx, d, storage.RepoKey(ns, repo))
	}
	o.OnHit = func(d digest.Digest) { l.idx.Touch(d, l.now()) }
}

// Close stops eviction and flushes the index.
func (l *lifecycle) Close() error {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	return l.idx.Close()
}
