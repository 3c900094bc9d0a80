package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// replicaLabel is label, ours on the filesystem named so next to ours
// on S3.
func replicaLabel(sys string) string {
	if sys == sysOurs {
		return "**ours, filesystem** (reference)"
	}
	return label(sys)
}

// replicaSections adds the replicas group's sections.
func (r *report) replicaSections(add func(title, intro, table string)) {
	o := r.b.o
	big := r.b.big
	add(fmt.Sprintf("7. Replicas on S3 and Redis: cold pull of one %s by %d clients", big.label, o.clients),
		fmt.Sprintf("Ours on S3 (versitygw) with its shared state in Redis, as one replica and as %d replicas that know each other (`cluster`); %d clients pull the image at once, spread over the replicas round-robin, the first client of each replica checking the digest; a fresh root directory in the bucket, Redis prefix and processes per run, %s. The upstream should send the layer once however many replicas ask: the replica that takes the fill's lease fetches it from upstream, the others stream it from that replica (\"peer fills\": `crp_peer_fills_total` summed over the replicas). Ours on the filesystem (one process, the lean build) for reference. "+
			"**On this %d-CPU machine the replicas, versitygw, Redis, the upstream, the counting proxy and the clients share the CPUs, so more replicas cannot add throughput here: these rows show that upstream sends the blob once (1.00×) and what the extra hops cost.** CPU, s: the replicas' processes; S3 + Redis: versitygw's and redis-server's, during the run.",
			clusterReplicas, o.clients, plural(o.repeat, "run"), r.machine.nproc),
		r.replicaColdTable())
	add("7b. Warm blob throughput on S3: 1 and "+fmt.Sprint(clusterReplicas)+" replicas, redirects on and off",
		fmt.Sprintf("From a filled bucket, served by fresh processes; %s per system, the systems interleaved, the clients of section 3 (up to %d clients the %s image, more the %d MiB one), spread over the replicas round-robin. Without redirects every byte goes bucket → replica → client (the s3 driver reads the object with S3 GETs; no sendfile); with `storage.redirect` the replica answers 307 and the client GETs the presigned URL from versitygw itself (every client follows it: Go's net/http for the client that checks the digest, the splice client for the others). \"÷ S3, 1 replica\": the row's throughput divided by that of one replica on S3 without redirects.",
			plural(o.repeat, "round"), o.clients, big.label, o.manyMiB),
		r.replicaWarmTable())
	add("7c. Blob hits: latency on S3 vs the filesystem, redirects on and off",
		fmt.Sprintf("One Go net/http client on keep-alive connections (following the 307 when redirects are on) GETs a stored blob %d times in a row, after one untimed GET that opens the connections and checks the digest: time to the first body byte (TTFB) and to the last, p50 and p90 of each run; %s per system and blob, the systems interleaved. CPU per GET: the replica's, and versitygw's + Redis's (the kernel counts CPU time in 10 ms ticks: ±%d µs per GET).",
			o.hitRequests, plural(o.repeat, "run"), 10000/o.hitRequests),
		r.replicaHitTable())
}

// replicaColdTable: cold pulls of the big image by --clients clients over
// ours on the filesystem and on S3, 1 and clusterReplicas replicas.
func (r *report) replicaColdTable() string {
	var b strings.Builder
	b.WriteString("| system | replicas | clients | wall time, s | time ÷ 1 replica | throughput, MB/s | upstream blob bytes (× layer) | upstream blob GETs | peer fills | layer commits to the bucket | S3 requests | peak RSS, MiB (all replicas) | CPU, s | S3 + Redis CPU, s |\n")
	b.WriteString("|---|---:|---:|---|---:|---|---|---|---|---|---|---|---|---|\n")
	n := r.b.o.clients
	one := r.sampled(kindCold, sysS3, r.b.big, n)
	layer := r.b.big.layers[0].digest
	for _, sys := range []string{sysOurs, sysS3, sysS3x3} {
		x := r.sampled(kindCold, sys, r.b.big, n)
		if x == nil {
			continue
		}
		rt, peer, commits, reqs, aux := "–", "–", "–", "–", "–"
		if one != nil {
			rt = ratio(x.wall().med, one.wall().med)
		}
		if isS3(sys) {
			peer = x.series(func(s sample) float64 { return s.peerFills }).format("%.0f")
			commits = x.series(func(s sample) float64 { return float64(s.s3.commits(layer)) }).format("%.0f")
			reqs = x.series(func(s sample) float64 { return float64(s.s3.total()) }).format("%.0f")
			aux = x.series(func(s sample) float64 { return s.auxCPU.Seconds() }).format("%.2f")
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			replicaLabel(sys), replicas(sys), n, x.wall().format("%.2f"), rt, x.mbps().format("%.0f"), x.upBytes().format("%.2f×"),
			x.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"), peer, commits, reqs,
			x.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f"),
			x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"), aux)
	}
	return b.String()
}

// replicaWarmTable: warm rounds of ours on the filesystem and on S3.
func (r *report) replicaWarmTable() string {
	var b strings.Builder
	b.WriteString("| system | replicas | clients | layer | throughput, MB/s | MB/s ÷ S3, 1 replica | wall time, s | upstream blob GETs | S3 requests | peak RSS, MiB (all replicas) | CPU, s | S3 + Redis CPU, s |\n")
	b.WriteString("|---|---:|---:|---|---|---:|---|---|---|---|---|---|\n")
	for _, n := range r.b.o.warmClients {
		img := r.b.warmImage(n)
		one := r.sampled(kindWarm, sysS3, img, n)
		for _, sys := range []string{sysOurs, sysS3, sysS3x3, sysS3Redir} {
			x := r.sampled(kindWarm, sys, img, n)
			if x == nil {
				continue
			}
			rt, reqs, aux := "–", "–", "–"
			if one != nil {
				rt = ratio(x.mbps().med, one.mbps().med)
			}
			if isS3(sys) {
				reqs = x.series(func(s sample) float64 { return float64(s.s3.total()) }).format("%.0f")
				aux = x.series(func(s sample) float64 { return s.auxCPU.Seconds() }).format("%.2f")
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				replicaLabel(sys), replicas(sys), n, img.label, x.mbps().format("%.0f"), rt, x.wall().format("%.2f"),
				x.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"), reqs,
				x.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f"),
				x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"), aux)
		}
	}
	return b.String()
}

// replicaHitTable: latency of sequential blob hits.
func (r *report) replicaHitTable() string {
	var b strings.Builder
	b.WriteString("| system | blob | GETs per run | TTFB p50, ms | TTFB p90, ms | total p50, ms | total p90, ms | total p50 ÷ S3, 1 replica | S3 requests per GET | CPU per GET, µs | S3 + Redis CPU per GET, µs |\n")
	b.WriteString("|---|---|---:|---|---|---|---|---:|---|---|---|\n")
	for _, img := range r.b.hits {
		one := r.sampled(kindHit, sysS3, img, 1)
		for _, sys := range []string{sysOurs, sysS3, sysS3Redir} {
			x := r.sampled(kindHit, sys, img, 1)
			if x == nil {
				continue
			}
			tot := func(s sample) float64 { return ms(s.totP50) }
			rt, reqs, aux := "–", "–", "–"
			if one != nil {
				rt = ratio(x.series(tot).med, one.series(tot).med)
			}
			if isS3(sys) {
				reqs = x.series(func(s sample) float64 { return float64(s.s3.total()) / float64(s.reqs) }).format("%.1f")
				aux = x.series(func(s sample) float64 { return perGET(s, s.auxCPU) }).format("%.0f")
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				replicaLabel(sys), img.label, r.b.o.hitRequests,
				x.series(func(s sample) float64 { return ms(s.ttfbP50) }).format("%.2f"),
				x.series(func(s sample) float64 { return ms(s.ttfbP90) }).format("%.2f"),
				x.series(tot).format("%.2f"),
				x.series(func(s sample) float64 { return ms(s.totP90) }).format("%.2f"), rt, reqs,
				x.series(func(s sample) float64 { return perGET(s, s.cpu) }).format("%.0f"), aux)
		}
	}
	return b.String()
}

// perGET is CPU time per request of a sample, in µs.
func perGET(s sample, cpu time.Duration) float64 {
	if s.reqs == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(s.reqs)
}

// replicasGoal: replicas on one bucket fetch a cold blob from upstream
// once, however many replicas its clients ask.
func (r *report) replicasGoal() goal {
	o := r.b.o
	t := goal{goal: fmt.Sprintf("upstream bytes for %d cold clients over %d replicas (S3 + Redis) = 1.00× the layer", o.clients, clusterReplicas), pass: true}
	var parts []string
	for _, sys := range []string{sysS3x3, sysS3} {
		x := r.sampled(kindCold, sys, r.b.big, o.clients)
		if x == nil {
			continue
		}
		t.ran = true
		s := x.upBytes()
		part := fmt.Sprintf("%s: %.2f× worst", strings.TrimPrefix(plainLabel(sys), "ours, S3 + Redis, "), s.hi)
		if sys == sysS3x3 {
			part += fmt.Sprintf(" (%s, %.0f peer fills per run)", r.b.big.label, x.series(func(s sample) float64 { return s.peerFills }).med)
			if s.hi != 1 || s.lo != 1 {
				t.pass = false
			}
		}
		parts = append(parts, part)
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// s3Notes lists, for every row of ours on S3, the S3 requests of a run or
// round by operation (medians).
func (r *report) s3Notes() []string {
	var out []string
	for _, x := range r.b.rows {
		if !isS3(x.sys) || len(x.samples) == 0 {
			continue
		}
		ops := map[string]bool{}
		for _, s := range x.samples {
			for op := range s.s3.reqs {
				ops[op] = true
			}
		}
		var parts []string
		for _, op := range slices.Sorted(maps.Keys(ops)) {
			m := x.series(func(s sample) float64 { return float64(s.s3.reqs[op]) }).med
			parts = append(parts, fmt.Sprintf("%s %.0f", op, m))
		}
		what := map[string]string{
			kindCold: fmt.Sprintf("cold %s, %d clients, per run (until the replicas exited)", x.img.label, x.clients),
			kindWarm: fmt.Sprintf("warm %s, %d clients, per round", x.img.label, x.clients),
			kindHit:  fmt.Sprintf("hits of the %s, per run of %d GETs", x.img.label, r.b.o.hitRequests),
		}[x.kind]
		out = append(out, fmt.Sprintf("S3 requests of %s, %s, by operation (medians): %s.", plainLabel(x.sys), what, strings.Join(parts, ", ")))
	}
	return out
}
