package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/gmarcy/container-registry-proxy/cluster"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/status"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/spf13/pflag"
)

// toolUsage is what gc --help and du --help print before the flags.
var toolUsage = map[string]string{
	"gc": "Usage: container-registry-proxy gc [--dry-run|-n] [flags]\n\nOne eviction pass with the configured bounds (cache.maxSize, cache.minFree,\ncache.inactiveTime) on the cache the configuration names; asks a running\nproxy to make it when one holds the cache. --dry-run lists what it would remove.",
	"du": "Usage: container-registry-proxy du [flags]\n\nThe cache's usage per upstream and repository, and the total against\ncache.maxSize.",
}

// runTool runs the gc and du subcommands: they read the same configuration
// as the server and are safe beside a running proxy (du and gc --dry-run
// read a walk of the storage when the proxy holds the index; gc asks the
// running proxy to make the pass itself).
func runTool(name string, args []string, env func(string) string, stdout, stderr io.Writer) int {
	dryRun := false
	var rest []string
	for _, a := range args {
		if name == "gc" && (a == "--dry-run" || a == "-n") {
			dryRun = true
			continue
		}
		rest = append(rest, a)
	}
	cfg, err := config.Load(rest, env)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "%s\n\n%s", toolUsage[name], config.Usage())
		return 0
	}
	if err == nil {
		err = needDriver(cfg.StorageDriverName())
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy %s: configuration error: %s\n", name, oneLine(err))
		return 2
	}
	ctx := context.Background()
	store, _, err := newStore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy %s: %v\n", name, err)
		return 2
	}
	if cfg.Redis.Addr != "" {
		return runSharedTool(ctx, name, cfg, store, dryRun, stdout, stderr)
	}
	write := name == "gc" && !dryRun
	idx, info, err := store.OpenIndexForTool(ctx, indexPath(cfg), write, 2*time.Second)
	if errors.Is(err, storage.ErrIndexLocked) && write {
		return gcViaProxy(cfg, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy %s: %v\n", name, err)
		return 1
	}
	defer closeIndex(idx, name, stderr)
	if info.Locked {
		fmt.Fprintln(stderr, "note: a proxy is running on this cache; figures come from a walk of the storage (access times are the files' times)")
	}
	if name == "du" {
		return du(ctx, cfg, store, idx, stdout, stderr)
	}
	return gc(ctx, cfg, store, idx, dryRun, stdout, stderr)
}

// runSharedTool runs du or gc against the index the replicas share
// through Redis: from any replica or any machine with the configuration.
// A gc pass takes the eviction lease, so it never overlaps a replica's.
func runSharedTool(ctx context.Context, name string, cfg *config.Config, store *storage.Store, dryRun bool, stdout, stderr io.Writer) int {
	r, err := cluster.OpenRedis(ctx, cluster.RedisOptions{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB, Prefix: cfg.Redis.Prefix})
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy %s: redis.addr: %v\n", name, err)
		return 2
	}
	defer r.Close() //nolint:errcheck // the tool's answer is printed; closing a client has nothing to say
	if down, why := r.Degraded(); down {
		fmt.Fprintf(stderr, "container-registry-proxy %s: %s\n", name, why)
		return 1
	}
	idx := cluster.NewIndex(r, cluster.IndexOptions{FlushInterval: -1})
	defer closeIndex(idx, name, stderr)
	if name == "du" {
		return du(ctx, cfg, store, idx, stdout, stderr)
	}
	opts := evictOptions(cfg, nil)
	opts.Lead = r.Leader(replicaName(cfg)+"/"+name, evictLeaseTTL)
	return gcWith(ctx, store, idx, opts, dryRun, stdout, stderr)
}

func closeIndex(idx storage.Index, name string, stderr io.Writer) {
	if err := idx.Close(); err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy %s: closing the cache index: %v\n", name, err)
	}
}

// du prints the cache's usage per repository.
func du(ctx context.Context, cfg *config.Config, store *storage.Store, idx storage.Index, stdout, stderr io.Writer) int {
	rows, err := store.Usage(ctx, idx)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy du: %v\n", err)
		return 1
	}
	printUsage(stdout, rows, int64(cfg.Cache.MaxSize))
	return 0
}

// gc makes (or, dry, plans) one eviction pass with the configured bounds.
func gc(ctx context.Context, cfg *config.Config, store *storage.Store, idx storage.Index, dryRun bool, stdout, stderr io.Writer) int {
	return gcWith(ctx, store, idx, evictOptions(cfg, nil), dryRun, stdout, stderr)
}

// gcWith makes (or plans) one eviction pass with opts.
func gcWith(ctx context.Context, store *storage.Store, idx storage.Index, opts storage.EvictOptions, dryRun bool, stdout, stderr io.Writer) int {
	var rep storage.Report
	var err error
	if dryRun {
		rep, err = store.Plan(ctx, idx, opts)
	} else {
		var ev *storage.Evictor
		if ev, err = storage.NewEvictor(store, idx, opts); err == nil {
			rep, err = ev.Pass(ctx)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: %v\n", err)
		return 1
	}
	printReport(stdout, rep, dryRun)
	return 0
}

func human(n int64) string { return status.HumanBytes(float64(n)) }

func printUsage(w io.Writer, rows []storage.UsageRow, max int64) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tREPOSITORY\tBLOBS\tMANIFESTS\tSIZE")
	for _, r := range rows {
		up, repo := r.Upstream, r.Repo
		if up == "" && repo == "" {
			up, repo = "TOTAL", "(unique bytes)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", up, repo, r.Blobs, r.Manifests, human(r.Bytes))
	}
	tw.Flush()
	if max > 0 && len(rows) > 0 {
		fmt.Fprintf(w, "bound (CACHE_MAX_SIZE): %s, %.0f%% used\n", human(max), 100*float64(rows[len(rows)-1].Bytes)/float64(max))
	}
}

func printReport(w io.Writer, rep storage.Report, dryRun bool) {
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tKIND\tSIZE\tLAST ACCESS\tREASON")
	for _, e := range rep.Removed {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Digest, e.Kind, human(e.Size), e.LastAccess.UTC().Format(time.RFC3339), rep.Reason[e.Digest])
	}
	tw.Flush()
	fmt.Fprintf(w, "%s %d objects, %s (cache: %s → %s)\n", verb, len(rep.Removed), human(rep.Bytes), human(rep.Before), human(rep.After))
}

// gcViaProxy asks the proxy running on this cache to make an eviction
// pass now (POST /_admin/gc on its listener, with the admin token).
func gcViaProxy(cfg *config.Config, stdout, stderr io.Writer) int {
	base, err := localURL(cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: a proxy holds the cache index, and it cannot be reached: %v\n", err)
		return 1
	}
	token, err := adminTokenFor(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: a proxy holds the cache index, and asking it needs its admin token: %v\n", err)
		return 1
	}
	url := base + adminGCPath
	// The URL is the configured listen address's own port on loopback.
	req, err := http.NewRequest(http.MethodPost, url, nil) //nolint:gosec // G704: see above
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: %v\n", err)
		return 1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req) //nolint:gosec // G704: see above
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: a proxy holds the cache index, and asking it at %s failed: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	var rep storage.Report
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&rep) != nil {
		fmt.Fprintf(stderr, "container-registry-proxy gc: the running proxy answered %s\n", resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "a proxy is running on this cache: it made the pass itself")
	printReport(stdout, rep, false)
	return 0
}
