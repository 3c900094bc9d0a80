package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
)

// System ids (--systems; direct-tls and ours-shim come with the tls group).
const (
	sysDirect    = "direct"
	sysOurs      = "ours"
	sysDist      = "distribution"
	sysNginx     = "nginx"
	sysStatic    = "nginx-static"
	sysDirectTLS = "direct-tls"
	sysShim      = "ours-shim"
	sysOursOn    = "ours-mc-on"  // ours with ENABLE_MANIFEST_CACHE=true
	sysOursOff   = "ours-mc-off" // ours with the manifest cache off (the default)
)

// label is how a system is named in the tables.
func label(sys string) string {
	switch sys {
	case sysDirect:
		return "upstream direct (HTTP)"
	case sysOurs:
		return "**ours**"
	case sysDist:
		return "distribution 2.8 proxy"
	case sysNginx:
		return "nginx proxy_cache + lock"
	case sysStatic:
		return "nginx static (sendfile)"
	case sysDirectTLS:
		return "upstream direct (TLS)"
	case sysShim:
		return "**ours via shim (TLS)**"
	case sysOursOn:
		return "**ours, manifest cache on**"
	case sysOursOff:
		return "**ours, manifest cache off**"
	case sysS3:
		return "**ours, S3 + Redis, 1 replica**"
	case sysS3x3:
		return fmt.Sprintf("**ours, S3 + Redis, %d replicas**", clusterReplicas)
	case sysS3Redir:
		return "**ours, S3 + Redis, 1 replica, redirect on**"
	}
	return sys
}

// plainLabel is label without Markdown.
func plainLabel(sys string) string {
	l := label(sys)
	if len(l) > 4 && l[:2] == "**" {
		return l[2 : len(l)-2]
	}
	return l
}

// isOurs says whether sys is our proxy.
func isOurs(sys string) bool {
	return sys == sysOurs || sys == sysShim || sys == sysOursOn || sys == sysOursOff || isS3(sys)
}

// instance is one running system under test.
type instance struct {
	sys   string
	t     target
	procs []*proc    // started for this instance, stopped by stop
	pids  func() int // the process whose tree is measured (CPU, memory), with the other procs' (replicas)
	cnt   *counter   // counts what the upstream served; nil when the row is the upstream itself
	mem   *memSampler
	cache string   // cache directory, when it has one
	logs  []string // logs worth a look on failure

	aux    []*proc // shared services it needs (the S3 server, Redis), measured apart, not stopped with it
	s3Root string  // S3 systems: the cache's root directory in the bucket
}

// measured returns the processes whose CPU and memory count: the main
// process's tree and those of the instance's other processes.
func (in *instance) measured() []int {
	main := in.pids()
	out := descendants(main)
	for _, p := range in.procs {
		if p.Pid() != main {
			out = append(out, descendants(p.Pid())...)
		}
	}
	return out
}

func (in *instance) String() string {
	return fmt.Sprintf("%s (pid %d, logs %v)", plainLabel(in.sys), in.pids(), in.logs)
}

// alive returns an error if a process of the instance exited.
func (in *instance) alive() error {
	for _, p := range in.procs {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}

// stop stops the instance's processes and its sampler.
func (b *bench) stop(in *instance) error {
	if in.mem != nil {
		in.mem.close()
	}
	var first error
	for _, p := range in.procs {
		if err := b.e.stop(p); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// start starts system sys with the cache directory named cacheName (a
// fresh one for every cold run; the same name for a warm instance, which
// reuses what an earlier instance filled).
func (b *bench) start(ctx context.Context, sys, cacheName string) (*instance, error) {
	plain := func(repo string) string { return repo }
	// Plain-HTTP blob GETs splice unless --client copy; the TLS systems
	// below turn it off.
	in := &instance{sys: sys, cnt: b.cnt, t: target{name: plain, newClient: newClient, splice: b.o.client == "splice"}}
	dir := filepath.Join(b.e.root, "sys", sys, cacheName)
	p, err := b.startSystem(ctx, in, dir, cacheName)
	if err != nil {
		return nil, err
	}
	if p != nil {
		in.procs = []*proc{p}
		in.pids = p.Pid
		in.logs = append(in.logs, p.Log)
		if sys == sysNginx || sys == sysStatic {
			in.logs = append(in.logs, filepath.Join(dir, "error.log"))
		}
	}
	in.mem = sampleMem(in.measured)
	return in, nil
}

// startSystem starts in's system in dir and sets up in to reach it; it
// returns the process started, nil for the upstream itself.
func (b *bench) startSystem(ctx context.Context, in *instance, dir, cacheName string) (*proc, error) {
	sys := in.sys
	var (
		p   *proc
		err error
	)
	switch sys {
	case sysDirect:
		in.t.base, in.cnt = b.direct, nil
		in.pids = b.reg.Pid
	case sysDirectTLS:
		roots := b.tls.pki.roots
		in.t.base, in.cnt, in.t.splice = b.tls.direct, nil, false
		in.t.newClient = func() *http.Client { return newTLSClient(roots, nil, b.o.tlsHTTP1) }
		in.pids = b.tls.reg.Pid
	case sysOurs, sysOursOn, sysOursOff:
		var env []string
		if sys == sysOursOn {
			env = []string{"ENABLE_MANIFEST_CACHE=true"}
		}
		in.cache = filepath.Join(dir, "cache")
		if p, in.t.base, err = startProxy(ctx, b.e, b.o.proxyBin, sys+"-"+cacheName, in.cache, b.counted, env); err != nil {
			return nil, err
		}
		in.t.name = func(repo string) string { return upstreamNS + "/" + repo }
	case sysShim:
		return b.startShim(ctx, in, dir, cacheName)
	case sysS3, sysS3x3, sysS3Redir:
		// in.procs, pids and logs are set: several processes.
		return nil, b.startReplicas(ctx, in, dir, cacheName)
	case sysDist:
		if p, in.t.base, err = startDistribution(ctx, b.e, b.o.registryBin, "distribution-proxy", dir, nil, b.counted); err != nil {
			return nil, err
		}
		in.cache = filepath.Join(dir, "data")
	case sysNginx:
		if p, in.t.base, err = startNginx(ctx, b.e, b.o.nginxBin, "nginx", dir, b.counted, ""); err != nil {
			return nil, err
		}
		in.cache = filepath.Join(dir, "cache")
	case sysStatic:
		if p, in.t.base, err = startNginx(ctx, b.e, b.o.nginxBin, "nginx-static", dir, b.counted, b.e.upstreamData()); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown system %q", sys)
	}
	return p, nil
}

// startShim starts ours with the CONNECT shim in front of the TLS upstream
// (through its counting proxy); in's clients reach the upstream's name
// through it as their HTTPS proxy, trusting its CA.
func (b *bench) startShim(ctx context.Context, in *instance, dir, cacheName string) (*proc, error) {
	in.cache = filepath.Join(dir, "cache")
	p, base, err := startTLSProxy(ctx, b.e, b.o.proxyBin, in.sys+"-"+cacheName, in.cache, b.tls.counted, b.tls.pki.caFile)
	if err != nil {
		return nil, err
	}
	ours, err := fetchCA(ctx, base)
	if err != nil {
		_ = b.e.stop(p)
		return nil, err
	}
	proxyURL, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	in.cnt = b.tls.cnt
	in.t.base, in.t.splice = "https://"+upstreamTLSHost, false
	in.t.newClient = func() *http.Client { return newTLSClient(ours, proxyURL, b.o.tlsHTTP1) }
	return p, nil
}

// hasCache says whether sys caches (has cold runs).
func hasCache(sys string) bool {
	return sys == sysOurs || sys == sysDist || sys == sysNginx || sys == sysShim || sys == sysOursOn || sys == sysOursOff || isS3(sys)
}

// committed waits until the instance's cache holds every blob of img for
// good (ours and distribution: the blob files; nginx writes its cache
// entry before the response ends).
func (b *bench) committed(ctx context.Context, in *instance, img *image) error {
	if len(in.procs) == 0 {
		return nil
	}
	for _, bl := range img.blobs() {
		var path string
		switch in.sys {
		case sysOurs, sysShim, sysOursOn, sysOursOff:
			path = ourBlobPath(in.cache, bl.digest)
		case sysDist:
			path = distBlobPath(in.cache, bl.digest)
		case sysS3, sysS3x3, sysS3Redir:
			// The posix backend keeps objects as files: the blob is
			// committed once its file in the bucket is whole.
			path = ourBlobPath(b.s3.dir(in.s3Root), bl.digest)
		default:
			continue
		}
		if err := waitFile(ctx, in.procs[0], path, bl.size); err != nil {
			return err
		}
	}
	return nil
}

// removeCache deletes a cold instance's directory after it stopped.
func (b *bench) removeCache(sys, cacheName string) error {
	if isS3(sys) {
		if err := b.s3.remove(s3Root(sys, cacheName)); err != nil {
			return err
		}
	}
	return os.RemoveAll(filepath.Join(b.e.root, "sys", sys, cacheName))
}
