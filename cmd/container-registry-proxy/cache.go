package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

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
// Free space is a local disk's: with another driver than the filesystem
// the bound is not applied (evicting from a bucket would not raise it),
// which is logged when log is set.
func evictOptions(cfg *config.Config, log *logrus.Logger) storage.EvictOptions {
	opts := storage.EvictOptions{
		MaxSize:  int64(cfg.Cache.MaxSize),
		MinFree:  int64(cfg.Cache.MinFree),
		Inactive: time.Duration(cfg.Cache.InactiveTime),
	}
	name, params := cfg.StorageDriver()
	if root, _ := params["rootdirectory"].(string); name == "filesystem" && root != "" {
		opts.FreeSpace = storage.DiskFree(root)
	} else if opts.MinFree > 0 {
		if log != nil {
			log.WithField("minFree", cfg.Cache.MinFree.String()).Infof("CACHE_MIN_FREE (cache.minFree) measures the filesystem driver's disk: not applied to storage.%s", name)
		}
		opts.MinFree = 0
	}
	return opts
}

// openIndex opens (or creates) the embedded index, or, for a replica
// (c not nil), the index shared through Redis.
func openIndex(cfg *config.Config, log *logrus.Logger, store *storage.Store, c *replicas) (storage.Index, error) {
	if c != nil {
		return c.index(store, log), nil
	}
	path := indexPath(cfg)
	idx, err := storage.OpenBoltIndex(path, storage.BoltOptions{Log: func(msg string, f map[string]any) { log.WithFields(f).Warn(msg) }})
	if errors.Is(err, storage.ErrIndexLocked) {
		return nil, &configError{fmt.Errorf("cache index %s is held by another container-registry-proxy: one server per cache directory", path)}
	}
	if err != nil {
		return nil, fmt.Errorf("cache index %s: %w", path, err)
	}
	return idx, nil
}

// openCache opens the index and starts the cache lifecycle on it,
// reporting evictions and totals to mt. Replicas evict one at a time.
func openCache(ctx context.Context, cfg *config.Config, log *logrus.Logger, store *storage.Store, mt *metrics.Metrics, c *replicas) (*cache.Lifecycle, error) {
	idx, err := openIndex(cfg, log, store, c)
	if err != nil {
		return nil, err
	}
	evict := evictOptions(cfg, log)
	evict.Lead = c.evictLead()
	evict.OnPass = func(rep storage.Report) {
		for _, e := range rep.Removed {
			mt.Evicted(evictionReason(rep.Reason[e.Digest]), e.Size)
		}
	}
	life, err := cache.Open(ctx, store, idx, cache.Options{Evict: evict, Log: log})
	if err != nil {
		return nil, &configError{errors.Join(err, idx.Close())}
	}
	mt.SetCacheUsage(life.Totals)
	bytes, count := life.Totals()
	log.WithFields(logrus.Fields{"bytes": bytes, "objects": count, "maxSize": cfg.Cache.MaxSize.String(),
		"minFree": config.Size(evict.MinFree).String(), "inactiveTime": cfg.Cache.InactiveTime.String()}).Info("cache bounds in force")
	return life, nil
}

// evictionReason is the crp_evictions_total label of a storage reason.
func evictionReason(r string) string {
	if r == storage.ReasonManifest {
		return "manifest"
	}
	return r
}
