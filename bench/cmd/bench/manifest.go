package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// manifestInstance returns a running instance of sys whose cache holds the
// big image's manifest and tag record: ours with the manifest cache on or
// off on a cache of its own, the others' warm instances.
func (b *bench) manifestInstance(ctx context.Context, sys string) (*instance, error) {
	if sys != sysOursOn && sys != sysOursOff {
		return b.warmInstance(ctx, sys)
	}
	if in := b.warm[sys]; in != nil {
		return in, nil
	}
	in, err := b.start(ctx, sys, "manifest")
	if err != nil {
		return nil, err
	}
	c := in.t.newClient()
	defer c.CloseIdleConnections()
	if _, _, err := getManifest(ctx, c, in.t.base, in.t.name(b.big.repo), b.big.tag); err != nil {
		_ = b.stop(in)
		return nil, err
	}
	b.warm[sys] = in
	return in, nil
}

// tagPulls makes --tag-pulls sequential GETs of the big image's manifest
// by tag with one client (after one untimed GET that fills the cache),
// repeat times per system, and counts the upstream requests.
func (b *bench) tagPulls(ctx context.Context, systems []string) error {
	for _, sys := range systems {
		in, err := b.manifestInstance(ctx, sys)
		if err != nil {
			return err
		}
		r := &row{kind: kindTags, sys: sys, img: b.big, clients: 1}
		b.rows = append(b.rows, r)
		c := in.t.newClient()
		name := in.t.name(b.big.repo)
		if _, _, err := getManifest(ctx, c, in.t.base, name, b.big.tag); err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		for i := range b.o.repeat {
			before := in.cnt.snapshot()
			start := time.Now()
			for range b.o.tagPulls {
				body, _, err := getManifest(ctx, c, in.t.base, name, b.big.tag)
				if err != nil {
					return fmt.Errorf("%s: %w", in, err)
				}
				if d := digest.FromBytes(body).String(); d != b.big.manifestDigest {
					return fmt.Errorf("%s: manifest digest %s, want %s", in, d, b.big.manifestDigest)
				}
			}
			s := sample{wall: time.Since(start), reqs: int64(b.o.tagPulls), upstream: in.cnt.snapshot().sub(before)}
			r.samples = append(r.samples, s)
			b.log("tag pulls, %s, run %d/%d: %d pulls in %.2fs, upstream manifest requests %d (GETs %d), other %d",
				plainLabel(sys), i+1, b.o.repeat, b.o.tagPulls, s.wall.Seconds(), s.upstream.ManifestRequests, s.upstream.ManifestGETs, s.upstream.OtherRequests)
		}
		c.CloseIdleConnections()
	}
	return nil
}

// latency runs --manifest-clients clients, each on a connection of its
// own (opened by one untimed GET), that each make sequential GETs of the
// big image's manifest by tag until --manifest-seconds passed or they made
// --manifest-requests; the systems interleaved, repeat runs each. It
// records every GET's latency.
func (b *bench) latency(ctx context.Context, systems []string) error {
	for _, sys := range systems {
		if _, err := b.manifestInstance(ctx, sys); err != nil {
			return err
		}
		b.rows = append(b.rows, &row{kind: kindLatency, sys: sys, img: b.big, clients: b.o.manClients})
	}
	for i := range b.o.repeat {
		for _, sys := range rotate(systems, i) {
			in := b.warm[sys]
			s, err := b.loadgen(ctx, in)
			if err != nil {
				return fmt.Errorf("manifest latency, %s, run %d: %w", plainLabel(sys), i+1, err)
			}
			r := b.find(kindLatency, sys, b.big, b.o.manClients)
			r.samples = append(r.samples, s)
			b.log("manifest GETs by tag, %d clients, %s, run %d/%d: p50 %.2f ms, p99 %.2f ms, %.0f req/s, upstream manifest requests %d, CPU %.2fs",
				b.o.manClients, plainLabel(sys), i+1, b.o.repeat, ms(s.p50), ms(s.p99), float64(s.reqs)/s.wall.Seconds(),
				s.upstream.ManifestRequests, s.cpu.Seconds())
		}
	}
	return nil
}

// loadgen is one latency run against in.
func (b *bench) loadgen(ctx context.Context, in *instance) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.o.roundTimeoutS)*time.Second)
	defer cancel()
	errs := &firstErr{cancel: cancel}
	clients := make([]*http.Client, b.o.manClients)
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	b.openConns(ctx, in, clients, errs)
	if err := errs.get(); err != nil {
		return sample{}, err
	}
	pids := in.measured()
	resetPeak(pids)
	in.mem.reset()
	var before counts
	if in.cnt != nil {
		before = in.cnt.snapshot()
	}
	cpu0 := sumCPU(pids)
	self0, _ := cpuTime(os.Getpid())
	lat, wall := b.timedGETs(ctx, in, clients, errs)
	if err := errs.get(); err != nil {
		return sample{}, err
	}
	self1, _ := cpuTime(os.Getpid())
	pids = in.measured()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	s := sample{wall: wall, reqs: int64(len(all)), p50: quantile(all, 0.50), p99: quantile(all, 0.99),
		cpu: sumCPU(pids) - cpu0, selfCPU: self1 - self0, rss: sumStatus(pids, "VmHWM")["VmHWM"]}
	s.anon, _ = in.mem.reset()
	if in.cnt != nil {
		s.upstream = in.cnt.snapshot().sub(before)
	} else {
		s.upstream = counts{ManifestRequests: s.reqs, ManifestGETs: s.reqs}
	}
	return s, nil
}

// firstErr keeps the first error of concurrent clients and cancels the
// others' context.
type firstErr struct {
	mu     sync.Mutex
	err    error
	cancel context.CancelFunc
}

func (f *firstErr) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
		f.cancel()
	}
	f.mu.Unlock()
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// openConns fills clients with new clients of in and opens their
// connections with one untimed GET each, concurrently, as the timed part
// will use them.
func (b *bench) openConns(ctx context.Context, in *instance, clients []*http.Client, errs *firstErr) {
	name := in.t.name(b.big.repo)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = in.t.newClient()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := getManifest(ctx, clients[i], in.t.base, name, b.big.tag); err != nil {
				errs.fail(err)
			}
		}()
	}
	wg.Wait()
}

// timedGETs starts the clients together; each makes sequential GETs of the
// big image's manifest by tag until --manifest-seconds passed or it made
// --manifest-requests. It returns every GET's latency, by client, and the
// wall time.
func (b *bench) timedGETs(ctx context.Context, in *instance, clients []*http.Client, errs *firstErr) ([][]time.Duration, time.Duration) {
	k := b.o.manRequests
	name := in.t.name(b.big.repo)
	lat := make([][]time.Duration, len(clients))
	gate := make(chan struct{})
	var (
		wg       sync.WaitGroup
		deadline time.Time
	)
	for i := range clients {
		lat[i] = make([]time.Duration, 0, k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			for j := 0; j < k && (j == 0 || time.Now().Before(deadline)); j++ {
				t0 := time.Now()
				body, _, err := getManifest(ctx, clients[i], in.t.base, name, b.big.tag)
				if err != nil {
					errs.fail(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
				if len(body) != len(b.big.manifest) {
					errs.fail(fmt.Errorf("manifest of %d bytes, want %d", len(body), len(b.big.manifest)))
					return
				}
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(time.Duration(b.o.manSeconds * float64(time.Second)))
	close(gate)
	wg.Wait()
	return lat, time.Since(start)
}

// quantile returns the q-quantile of sorted xs (nearest rank).
func quantile(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.5) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
