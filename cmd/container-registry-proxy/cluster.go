package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/gmarcy/container-registry-proxy/cluster"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

// replicas are what the replicas of one cache share through Redis
// (docs/scaling.md): nil without redis.addr.
type replicas struct {
	redis   *cluster.Redis
	members *cluster.Members
	fetcher *cluster.Fetcher
	secret  string
	// name holds the eviction lease: the advertised URL, else host and
	// process.
	name string
}

// evictLeaseTTL is how long an eviction pass's lease lives without
// renewal (it is renewed while the pass runs).
const evictLeaseTTL = 30 * time.Second

// openReplicas connects to Redis, joins the members (advertising
// cluster.advertise) and builds the fill coordinator. An unreachable
// Redis is no error: the replica starts degraded.
func openReplicas(ctx context.Context, cfg *config.Config, log *logrus.Logger, mt *metrics.Metrics) (*replicas, error) {
	if cfg.Redis.Addr == "" {
		return nil, nil
	}
	cluster.LogClientTo(log)
	r, err := cluster.OpenRedis(ctx, cluster.RedisOptions{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password,
		DB: cfg.Redis.DB, Prefix: cfg.Redis.Prefix, Log: log, OnError: mt.RedisError})
	if err != nil {
		return nil, &configError{fmt.Errorf("redis.addr: %w", err)}
	}
	c := &replicas{redis: r, secret: cfg.Cluster.Secret, name: replicaName(cfg)}
	c.members = cluster.JoinMembers(ctx, r, cfg.Cluster.Advertise, 0)
	c.fetcher = cluster.NewFetcher(r, c.members, cluster.FetcherOptions{Secret: cfg.Cluster.Secret, Observer: mt, Log: log})
	fields := logrus.Fields{"redis": cfg.Redis.Addr, "prefix": cfg.Redis.Prefix, "advertise": cfg.Cluster.Advertise}
	if cfg.Cluster.Advertise == "" {
		log.WithFields(fields).Warn("sharing the cache index through Redis without cluster.advertise: this replica streams other replicas' fills but never fills for them")
	} else {
		log.WithFields(fields).Info("replica of a shared cache: index, fills and eviction coordinated through Redis")
	}
	return c, nil
}

// replicaName names this process in leases.
func replicaName(cfg *config.Config) string {
	if cfg.Cluster.Advertise != "" {
		return cfg.Cluster.Advertise
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/pid-%d", host, os.Getpid())
}

// evictLead makes eviction passes run on one replica at a time; nil (one
// process: always) without Redis.
func (c *replicas) evictLead() func(context.Context) (context.Context, func(), bool) {
	if c == nil {
		return nil
	}
	return c.redis.Leader(c.name, evictLeaseTTL)
}

// index is the cache index shared through Redis; reconcile repairs it
// from the storage when Redis lost it or its journal overflowed.
func (c *replicas) index(store *storage.Store, log *logrus.Logger) storage.Index {
	var idx *cluster.Index
	idx = cluster.NewIndex(c.redis, cluster.IndexOptions{Log: log, Reconcile: func(ctx context.Context) error {
		_, err := store.Reconcile(ctx, idx)
		return err
	}})
	return idx
}

// fetcherOf is the mirror's Fetcher: the coordinator with Redis, the
// mirror's own (from upstream) without.
func (c *replicas) fetcherOf() mirror.Fetcher {
	if c == nil {
		return nil
	}
	return c.fetcher
}

// peerHandler serves the other replicas' requests for blobs behind the
// cluster secret; nil when this replica is not advertised.
func (c *replicas) peerHandler(m *mirror.Mirror) http.Handler {
	if c == nil || c.members.Self() == "" {
		return nil
	}
	return cluster.RequireSecret(c.secret, m.PeerHandler())
}

// memberList lists the live replicas for the status page; nil alone.
func (c *replicas) memberList() func() []string {
	if c == nil {
		return nil
	}
	return c.members.Live
}

// degraded is /readyz's detail while Redis is unreachable.
func (c *replicas) degraded() (bool, string) {
	if c == nil {
		return false, ""
	}
	return c.redis.Degraded()
}

// close leaves the members and closes the connection (after the cache
// lifecycle flushed the index).
func (c *replicas) close() error {
	if c == nil {
		return nil
	}
	return errors.Join(c.members.Close(), c.redis.Close())
}
