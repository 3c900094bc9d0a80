package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// stat is the median and spread of a series.
type stat struct{ med, lo, hi float64 }

func statOf(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{m, s[0], s[len(s)-1]}
}

// format prints "median (min–max)" with the verb f for each number.
func (s stat) format(f string) string {
	if s.lo == s.hi {
		return fmt.Sprintf(f, s.med)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.med, s.lo, s.hi)
}

func (sc *scenario) series(f func(sample) float64) stat {
	xs := make([]float64, len(sc.samples))
	for i, s := range sc.samples {
		xs[i] = f(s)
	}
	return statOf(xs)
}

func (sc *scenario) wall() stat {
	return sc.series(func(s sample) float64 { return s.wall.Seconds() })
}

// machine describes where the numbers were measured.
type machine struct {
	nproc                     int
	cpu, kernel, goVersion    string
	registryVer, proxyVersion string
	date                      string
	load0, load1              string // /proc/loadavg at start and end
}

func machineInfo(o options, load0 string) machine {
	m := machine{nproc: runtime.NumCPU(), goVersion: runtime.Version(), date: time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		load0: load0, load1: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				m.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	m.registryVer = firstLine(o.registryBin, "--version")
	m.proxyVersion = firstLine(o.proxyBin, "--version")
	return m
}

func firstLine(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// report turns the scenarios into Markdown.
type report struct {
	o                  options
	img                image
	scenarios          []*scenario
	cold1, coldN, warm *scenario
	warmHashed         *scenario // the floor for coldN on this machine
	tls                *shimRows // the TLS rows, when they ran
	machine            machine
	took               time.Duration
}

func (r report) table() string {
	var b strings.Builder
	b.WriteString("| scenario | clients | runs | wall time, s | throughput, MB/s | upstream blob bytes (× blob) | upstream blob GETs | upstream manifest reqs (GETs) | last-byte wait, ms | proxy CPU, s | proxy peak RSS (VmHWM), MiB | proxy peak RssAnon, MiB |\n")
	b.WriteString("|---|---:|---:|---|---|---|---|---|---|---|---|---|\n")
	size := float64(r.img.blobSize)
	for _, sc := range r.scenarios {
		rss, anon, cpu := "–", "–", "–"
		if sc.proxy {
			rss = sc.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f")
			anon = sc.series(func(s sample) float64 { return mib(s.anon) }).format("%.1f")
			cpu = sc.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f")
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			sc.name, sc.clients, len(sc.samples),
			sc.wall().format("%.2f"),
			sc.series(func(s sample) float64 { return mbps(s.bytes, s.wall) }).format("%.0f"),
			sc.series(func(s sample) float64 { return float64(s.upstream.BlobBytes) / size }).format("%.2f×"),
			sc.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"),
			sc.series(func(s sample) float64 { return float64(s.upstream.ManifestRequests) }).format("%.0f")+
				" ("+sc.series(func(s sample) float64 { return float64(s.upstream.ManifestGETs) }).format("%.0f")+")",
			sc.series(func(s sample) float64 { return float64(s.lastWait.Microseconds()) / 1000 }).format("%.0f"),
			cpu, rss, anon)
	}
	return b.String()
}

// target is one goal with its verdict.
type target struct {
	goal, measured string
	pass, ran      bool
}

func (r report) targetList() []target {
	n := r.o.clients
	var ts []target
	if r.coldN != nil {
		worst := r.coldN.series(func(s sample) float64 { return float64(s.upstream.BlobBytes) })
		ts = append(ts, target{
			goal:     fmt.Sprintf("upstream blob bytes, %d cold clients = 1.0× the blob", n),
			measured: fmt.Sprintf("%.2f× median, %.2f× worst (%d bytes for a %d-byte blob)", worst.med/float64(r.img.blobSize), worst.hi/float64(r.img.blobSize), int64(worst.hi), r.img.blobSize),
			pass:     worst.hi == float64(r.img.blobSize) && worst.lo == float64(r.img.blobSize), ran: true,
		})
		c1, cn := r.cold1.wall().med, r.coldN.wall().med
		measured := fmt.Sprintf("%.2fs vs %.2fs = %.2f× (medians)", cn, c1, cn/c1)
		if r.warmHashed != nil {
			f := r.warmHashed.wall().med
			measured += fmt.Sprintf("; reference: %d hashing clients served from a warm cache take %.2fs = %.2f×", n, f, f/c1)
		}
		ts = append(ts, target{
			goal:     fmt.Sprintf("%d-client cold time ≤ 1.2× 1-client cold time", n),
			measured: measured,
			pass:     cn <= 1.2*c1, ran: true,
		})
	}
	if r.tls != nil {
		v := r.tls.via.series(func(s sample) float64 { return mbps(s.bytes, s.wall) }).med
		d := r.tls.direct.series(func(s sample) float64 { return mbps(s.bytes, s.wall) }).med
		ratio := v / d
		ts = append(ts, target{
			goal: "warm throughput through the shim ≥ 1.0× the direct TLS download from the upstream",
			measured: fmt.Sprintf("%.0f vs %.0f MB/s = %.2f× (medians of the length-only rows, %d clients); per interleaved round pair %s; serving CPU per round: proxy %.2f s, docker-registry %.2f s (medians)",
				v, d, ratio, n, statOf(r.tls.ratios).format("%.2f×"),
				r.tls.via.series(func(s sample) float64 { return s.cpu.Seconds() }).med,
				r.tls.direct.series(func(s sample) float64 { return s.peerCPU.Seconds() }).med),
			pass: ratio >= 1.0, ran: true,
		})
	}
	var worst float64
	var where string
	for _, sc := range r.scenarios {
		if !sc.proxy {
			continue
		}
		if hi := sc.series(func(s sample) float64 { return mib(s.rss) }).hi; hi > worst {
			worst, where = hi, sc.name
		}
	}
	ts = append(ts, target{
		goal:     "proxy peak RSS < 64 MiB",
		measured: fmt.Sprintf("%.1f MiB worst (%s)", worst, where),
		pass:     worst < 64, ran: where != "",
	})
	return ts
}

func (r report) targets() string {
	var b strings.Builder
	b.WriteString("| target | measured | result |\n|---|---|---|\n")
	for _, t := range r.targetList() {
		verdict := "**FAIL**"
		switch {
		case !t.ran:
			verdict = "not run"
		case t.pass:
			verdict = "pass"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.goal, t.measured, verdict)
	}
	return b.String()
}

func (r report) failedTargets() []string {
	var out []string
	for _, t := range r.targetList() {
		if t.ran && !t.pass {
			out = append(out, t.goal+": "+t.measured)
		}
	}
	return out
}

func (r report) markdown() string {
	m := r.machine
	cmd := r.o.command
	if cmd == "" {
		cmd = strings.Join(os.Args, " ")
	}
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `bench/run.sh` (program `bench/cmd/bench`); rerun it to refresh this page.\n\n")
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- CPUs (nproc): %d — %s\n", m.nproc, m.cpu)
	fmt.Fprintf(&b, "- kernel (uname -r): %s\n", m.kernel)
	fmt.Fprintf(&b, "- Go: %s\n", m.goVersion)
	fmt.Fprintf(&b, "- upstream: %s (Debian `docker-registry`, filesystem storage, plain HTTP on 127.0.0.1", m.registryVer)
	if r.tls != nil {
		b.WriteString("; for the TLS rows a second instance on the same storage serving TLS, h2 and HTTP/1.1 by ALPN")
	}
	b.WriteString(")\n")
	fmt.Fprintf(&b, "- proxy: %s\n", m.proxyVersion)
	fmt.Fprintf(&b, "- date: %s; whole run %.0fs\n", m.date, r.took.Seconds())
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at start: %s; at end: %s\n\n", m.load0, m.load1)
	b.WriteString("## Command\n\n```sh\n" + cmd + "\n```\n\n")
	fmt.Fprintf(&b, "One image: an OCI manifest, a config and one random (incompressible) layer of %d MiB (`%s`). ", r.o.sizeMiB, r.img.blobDigest)
	fmt.Fprintf(&b, "Each client GETs the manifest by tag, then the blob, and checks the body's length (and its SHA-256 where noted). ")
	fmt.Fprintf(&b, "Cold scenarios: %s each, a fresh cache directory and a fresh proxy process per run. ", plural(r.o.repeat, "run"))
	fmt.Fprintf(&b, "Warm: on one fresh proxy process over a filled cache, %s with hashed bodies, then %s that only count bytes. ", plural(r.o.repeat, "round"), plural(r.o.warmRounds, "round"))
	if r.tls != nil {
		proto := "h2 negotiated by ALPN"
		if r.o.tlsHTTP1 {
			proto = "HTTP/1.1 only (`--tls-http1`)"
		}
		fmt.Fprintf(&b, "TLS rows: %d Go clients, each with its own transport and connection (%s), GET the same image over TLS, either directly from the TLS upstream (trusting a throwaway test CA) or through the proxy's CONNECT shim (`https://%s/…` with the proxy as explicit HTTP proxy, trusting the proxy's CA from `/ca.crt`) from a cache filled through the shim by one earlier pull and served by a fresh proxy process; the same round counts as the warm rows, direct and shim rounds interleaved in alternating order. ", r.o.clients, proto, upstreamTLSHost)
	}
	b.WriteString("Cells show the median and, in parentheses, min–max. MB = 10⁶ bytes; throughput = body bytes of all clients / wall time.\n\n")
	b.WriteString("## Results\n\n")
	b.WriteString(r.table())
	b.WriteString("\n## Targets\n\n")
	b.WriteString(r.targets())
	b.WriteString("\n## Notes\n\n")
	for _, n := range r.notes() {
		b.WriteString("- " + n + "\n")
	}
	if r.o.notes != "" {
		if extra, err := os.ReadFile(r.o.notes); err == nil {
			b.WriteString("\n## Analysis\n\n")
			fmt.Fprintf(&b, "(From `%s`, written by hand after a run; the numbers above are regenerated on every run.)\n\n", r.o.notes)
			b.Write(extra)
		}
	}
	return b.String()
}

func (r report) notes() []string {
	notes := []string{
		"Upstream bytes and request counts are measured by a counting reverse proxy (`net/http/httputil`) inside the benchmark program, between the proxy and docker-registry; they count response body bytes by kind (blobs/, manifests/). The proxy's configuration maps `upstream.test:5000` to it (`insecure: true`, plain HTTP); clients use `/v2/upstream.test_5000/bench/big/…`.",
		"Peak RSS is `VmHWM` from `/proc/<pid>/status` of the proxy process, read at the end of each run (page cache is not part of it, but the executable's own file-backed text and rodata pages are). `RssAnon` (the process's own memory: heap, stacks, buffers) is sampled every 20 ms and its peak shown beside it. Proxy CPU is utime+stime from `/proc/<pid>/stat` over the run. Last-byte wait: how long after all other bytes the final byte of a body arrived, the longest of the run's clients (0 when every client lagged behind the proxy and read the last bytes in one go).",
		"Cold runs and the \"bodies hashed\" warm rounds hash every client's body and compare it with the digest; the plain warm rounds only count bytes (hashing " + fmt.Sprint(r.o.clients) + " streams on the same small machine measures SHA-256, not the proxy). The hashed warm row is therefore the reference for a cold run with as many hashing clients on this machine: what delivery alone costs here.",
		fmt.Sprintf("Everything shares the machine's %d CPUs: docker-registry, the counting proxy, the proxy under test and the clients (which hash), plus whatever else runs on the machine (see the load average). The reference rows show what the upstream alone delivers to one hashing client, directly and through the counter.", r.machine.nproc),
	}
	if r.tls != nil {
		notes = append(notes, r.tlsNotes()...)
	}
	for _, sc := range r.scenarios {
		if sc.lines == nil {
			continue
		}
		var parts []string
		for _, k := range []string{"HIT", "MISS", "STALE", "REVALIDATED", "PASS", "none", "aborted"} {
			if v := sc.lines[k]; v > 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", k, v))
			}
		}
		for k, v := range sc.lines {
			if !slices.Contains([]string{"HIT", "MISS", "STALE", "REVALIDATED", "PASS", "none", "aborted"}, k) {
				parts = append(parts, fmt.Sprintf("%s=%d", k, v))
			}
		}
		what := sc.name + ", all runs"
		if sc.linesOf != "" {
			what = sc.linesOf
		}
		notes = append(notes, fmt.Sprintf("Blob GET lines in the proxy's access log by `cache=`, %s: %s.", what, strings.Join(parts, ", ")))
	}
	return notes
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// tlsNotes describes the TLS rows: how the upstream and shim are set up,
// the negotiated protocols, and the CPU of the serving process and of the
// clients.
func (r report) tlsNotes() []string {
	t := r.tls
	notes := []string{
		fmt.Sprintf("TLS upstream: a second docker-registry process on the plain one's storage directory, with `http.tls.certificate`/`key` from a throwaway ECDSA P-256 CA made by the benchmark (server certificate SANs `127.0.0.1` and `%s`), so the plain-HTTP rows and their numbers stay as before. The proxy maps `%s` to a TLS counting proxy in front of it (`endpoint: https://127.0.0.1:<port>`, `caFile:` the test CA); the clients' CONNECT target `%s` is never resolved by anyone.", strings.Split(upstreamTLSHost, ":")[0], upstreamTLSHost, upstreamTLSHost),
	}
	for _, sc := range []*scenario{t.directHashed, t.direct, t.viaHashed, t.via} {
		var parts []string
		ps := sc.protos()
		keys := make([]string, 0, len(ps))
		for k := range ps {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, ps[k]))
		}
		serving := "proxy CPU " + sc.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f") + " s"
		if sc.peer {
			serving = "docker-registry CPU " + sc.series(func(s sample) float64 { return s.peerCPU.Seconds() }).format("%.2f") + " s"
		}
		notes = append(notes, fmt.Sprintf("%s: clients' protocol %s; per round %s, clients (this program) %s s CPU.",
			sc.name, strings.Join(parts, ", "), serving, sc.series(func(s sample) float64 { return s.selfCPU.Seconds() }).format("%.2f")))
	}
	return notes
}
