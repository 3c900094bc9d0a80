package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
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

// format prints "median (min–max)" with the verb f for each number, or
// the median alone when the spread rounds away.
func (s stat) format(f string) string {
	med, lo, hi := fmt.Sprintf(f, s.med), fmt.Sprintf(f, s.lo), fmt.Sprintf(f, s.hi)
	if lo == hi {
		return med
	}
	return med + " (" + lo + "–" + hi + ")"
}

// machine describes where the numbers were measured.
type machine struct {
	nproc                     int
	cpu, kernel, goVersion    string
	registryVer, proxyVersion string
	fullVersion               string // the build that serves S3 (the lean one runs <binary>-full)
	nginxVer                  string
	date                      string
	load0, load1              string // /proc/loadavg at start and end
	memTotal                  string
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
	if kb, err := statusLikeKB("/proc/meminfo", "MemTotal"); err == nil {
		m.memTotal = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	m.registryVer = firstLine(o.registryBin, "--version")
	m.proxyVersion = firstLine(o.proxyBin, "--version")
	m.fullVersion = m.proxyVersion
	if _, err := os.Stat(o.proxyBin + "-full"); err == nil {
		m.fullVersion = firstLine(o.proxyBin+"-full", "--version")
	}
	m.nginxVer = firstLine(o.nginxBin, "-v")
	return m
}

// statusLikeKB reads a "Key: N kB" line of a /proc file.
func statusLikeKB(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			var n int64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &n)
			return n, err
		}
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}

func firstLine(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// report turns the rows into Markdown.
type report struct {
	b          *bench
	machine    machine
	took       time.Duration
	chartFiles []string // PNG files written, for links
}

// rowsOf returns the rows of kind for img and clients (img nil: any
// image, clients 0: any count), in the order of systems. Callers with an
// image that may not exist must check it: nil is not "none". Ours on S3
// (the replicas group) has tables of its own and is left out.
func (r *report) rowsOf(kind string, img *image, clients int) []*row {
	var out []*row
	for _, x := range r.b.rows {
		if x.kind == kind && (img == nil || x.img == img) && (clients == 0 || x.clients == clients) && len(x.samples) > 0 && !isS3(x.sys) {
			out = append(out, x)
		}
	}
	return out
}

// ours returns the row of our proxy among rows (sysOurs, else the shim).
func ours(rows []*row) *row {
	for _, x := range rows {
		if x.sys == sysOurs {
			return x
		}
	}
	for _, x := range rows {
		if x.sys == sysShim {
			return x
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (r *report) rssCells(x *row) (string, string) {
	return x.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f"),
		x.series(func(s sample) float64 { return mib(s.anon) }).format("%.1f")
}

// coldTable is the table of cold rows of img.
func (r *report) coldTable(img *image) string {
	var b strings.Builder
	b.WriteString("| system | clients | wall time, s | throughput, MB/s | time ÷ ours | upstream blob bytes (× image) | upstream blob GETs | upstream manifest reqs (GETs) | other upstream reqs | peak RSS, MiB | peak RssAnon, MiB | CPU, s |\n")
	b.WriteString("|---|---:|---|---|---:|---|---|---|---|---|---|---|\n")
	for _, n := range []int{1, r.b.o.clients} {
		rows := r.rowsOf(kindCold, img, n)
		o := ours(rows)
		for _, x := range rows {
			rt := "–"
			if o != nil {
				rt = ratio(x.wall().med, o.wall().med)
			}
			rss, anon := r.rssCells(x)
			up := x.upBytes().format("%.2f×")
			if x.sys == sysDirect {
				up += " (is the upstream)"
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				label(x.sys), x.clients, x.wall().format("%.2f"), x.mbps().format("%.0f"), rt, up,
				x.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"),
				x.series(func(s sample) float64 { return float64(s.upstream.ManifestRequests) }).format("%.0f")+" ("+
					x.series(func(s sample) float64 { return float64(s.upstream.ManifestGETs) }).format("%.0f")+")",
				x.series(func(s sample) float64 { return float64(s.upstream.OtherRequests) }).format("%.0f"),
				rss, anon, x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"))
		}
		if n == 1 && r.b.o.clients == 1 {
			break
		}
	}
	return b.String()
}

// warmTable is the table of warm rows of the given systems.
func (r *report) warmTable(systems []string, clients []int) string {
	var b strings.Builder
	b.WriteString("| system | clients | layer | throughput, MB/s | MB/s ÷ ours | wall time, s | upstream blob GETs | upstream manifest reqs | peak RSS, MiB | peak RssAnon, MiB | CPU, s |\n")
	b.WriteString("|---|---:|---|---|---:|---|---|---|---|---|---|\n")
	for _, n := range clients {
		rows := r.rowsOf(kindWarm, nil, n)
		rows = slices.DeleteFunc(rows, func(x *row) bool { return !slices.Contains(systems, x.sys) })
		o := ours(rows)
		for _, x := range rows {
			rt := "–"
			if o != nil {
				rt = ratio(x.mbps().med, o.mbps().med)
			}
			rss, anon := r.rssCells(x)
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				label(x.sys), x.clients, x.img.label, x.mbps().format("%.0f"), rt, x.wall().format("%.2f"),
				x.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"),
				x.series(func(s sample) float64 { return float64(s.upstream.ManifestRequests) }).format("%.0f"),
				rss, anon, x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"))
		}
	}
	return b.String()
}

func (r *report) tagTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| system | upstream requests per %d tag pulls | of them manifest GETs | of them manifest HEADs | other upstream requests | time per pull, ms |\n", r.b.o.tagPulls)
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, x := range r.rowsOf(kindTags, nil, 0) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", label(x.sys),
			x.series(func(s sample) float64 {
				return float64(s.upstream.ManifestRequests + s.upstream.BlobRequests + s.upstream.OtherRequests)
			}).format("%.0f"),
			x.series(func(s sample) float64 { return float64(s.upstream.ManifestGETs) }).format("%.0f"),
			x.series(func(s sample) float64 { return float64(s.upstream.ManifestRequests - s.upstream.ManifestGETs) }).format("%.0f"),
			x.series(func(s sample) float64 { return float64(s.upstream.OtherRequests + s.upstream.BlobRequests) }).format("%.0f"),
			x.series(func(s sample) float64 { return s.wall.Seconds() * 1000 / float64(s.reqs) }).format("%.2f"))
	}
	return b.String()
}

func (r *report) latencyTable() string {
	var b strings.Builder
	b.WriteString("| system | clients | p50, ms | p99, ms | p99 ÷ ours | requests/s | upstream reqs per 100 GETs | CPU, s | peak RSS, MiB |\n")
	b.WriteString("|---|---:|---|---|---:|---|---|---|---|\n")
	rows := r.rowsOf(kindLatency, nil, 0)
	var o *row
	for _, x := range rows {
		if x.sys == sysOursOn {
			o = x
		}
	}
	for _, x := range rows {
		rt := "–"
		if o != nil {
			rt = ratio(x.series(func(s sample) float64 { return ms(s.p99) }).med, o.series(func(s sample) float64 { return ms(s.p99) }).med)
		}
		up := x.series(func(s sample) float64 {
			return 100 * float64(s.upstream.ManifestRequests+s.upstream.OtherRequests+s.upstream.BlobRequests) / float64(s.reqs)
		}).format("%.0f")
		if x.sys == sysDirect {
			up += " (is the upstream)"
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", label(x.sys), x.clients,
			x.series(func(s sample) float64 { return ms(s.p50) }).format("%.2f"),
			x.series(func(s sample) float64 { return ms(s.p99) }).format("%.2f"), rt,
			x.series(func(s sample) float64 { return float64(s.reqs) / s.wall.Seconds() }).format("%.0f"), up,
			x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"),
			x.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f"))
	}
	return b.String()
}

// memoryTable shows peak memory of the memory rows: warm pulls by
// --mem-clients clients, cold pulls by --clients of the largest scaling
// image and of the big one.
func (r *report) memoryTable() string {
	o := r.b.o
	var b strings.Builder
	b.WriteString("| system | scenario | peak RSS, MiB | RSS ÷ ours | peak RssAnon, MiB | CPU, s |\n")
	b.WriteString("|---|---|---|---:|---|---|\n")
	type sc struct {
		kind string
		img  *image
		n    int
		name string
	}
	var scs []sc
	if img := r.b.warmImage(o.memClients); img != nil {
		scs = append(scs, sc{kindWarm, img, o.memClients, fmt.Sprintf("%d concurrent warm pulls (%s)", o.memClients, img.label)})
	}
	if big := r.b.singles[slices.Max(o.scalingMiB)]; big != nil {
		scs = append(scs, sc{kindCold, big, o.clients, fmt.Sprintf("%d concurrent cold pulls (%s)", o.clients, big.label)})
	}
	if r.b.big != nil && r.b.singles[slices.Max(o.scalingMiB)] != r.b.big {
		scs = append(scs, sc{kindCold, r.b.big, o.clients, fmt.Sprintf("%d concurrent cold pulls (%s)", o.clients, r.b.big.label)})
	}
	for _, s := range scs {
		if s.img == nil {
			continue
		}
		rows := r.rowsOf(s.kind, s.img, s.n)
		ou := ours(rows)
		for _, x := range rows {
			rss, anon := r.rssCells(x)
			rt := "–"
			if ou != nil {
				rt = ratio(x.series(func(s sample) float64 { return mib(s.rss) }).med, ou.series(func(s sample) float64 { return mib(s.rss) }).med)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", label(x.sys), s.name, rss, rt, anon,
				x.series(func(s sample) float64 { return s.cpu.Seconds() }).format("%.2f"))
		}
	}
	return b.String()
}

func (r *report) scalingTable() string {
	var b strings.Builder
	b.WriteString("| system | layer | clients | wall time, s | time ÷ ours | throughput, MB/s | upstream blob bytes (× layer) | upstream blob GETs | peak RSS, MiB |\n")
	b.WriteString("|---|---|---:|---|---:|---|---|---|---|\n")
	for _, m := range r.b.o.scalingMiB {
		img := r.b.singles[m]
		if img == nil {
			// Not pushed (scaling did not run); rowsOf would take nil
			// for any image.
			continue
		}
		rows := r.rowsOf(kindCold, img, r.b.o.clients)
		rows = slices.DeleteFunc(rows, func(x *row) bool { return x.sys == sysDirect })
		o := ours(rows)
		for _, x := range rows {
			rt := "–"
			if o != nil {
				rt = ratio(x.wall().med, o.wall().med)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", label(x.sys), x.img.label, x.clients,
				x.wall().format("%.2f"), rt, x.mbps().format("%.0f"), x.upBytes().format("%.2f×"),
				x.series(func(s sample) float64 { return float64(s.upstream.BlobRequests) }).format("%.0f"),
				x.series(func(s sample) float64 { return mib(s.rss) }).format("%.1f"))
		}
	}
	return b.String()
}

// sections returns the result tables with their headings.
func (r *report) sections() []string {
	o := r.b.o
	var out []string
	add := func(title, intro, table string) {
		if strings.Count(table, "\n") <= 2 {
			return
		}
		s := "### " + title + "\n\n"
		if intro != "" {
			s += intro + "\n\n"
		}
		out = append(out, s+table)
	}
	// A section shows its own scenario's rows only: rows of other groups
	// can match its tables (scaling holds the big image at --clients
	// clients, the memory table cold rows), so it is left out when its
	// group did not run.
	if o.runs("cold") && r.b.big != nil {
		add("1. Cold pull of one "+r.b.big.label, fmt.Sprintf("Each client GETs the manifest by tag, the config and the layer; a fresh cache and a fresh process per run. %s.", plural(o.repeat, "run")), r.coldTable(r.b.big))
	}
	if o.runs("image") && r.b.layered != nil {
		add(fmt.Sprintf("2. Cold pull of an image of %s", r.b.layered.label), fmt.Sprintf("Each client GETs the manifest, then the config and the layers, %d at a time (Docker's default).", o.parallel), r.coldTable(r.b.layered))
	}
	warmSys := []string{sysDirect, sysOurs, sysDist, sysNginx, sysStatic}
	if o.runs("warm") {
		add("3. Warm blob throughput, plain HTTP", fmt.Sprintf("From a filled cache, served by a fresh process; %s per system, the systems interleaved. Up to %d clients pull the %s image, more clients the %s one, so that a round moves a similar amount of data.",
			plural(o.repeat, "round"), o.clients, r.b.big.label, fmt.Sprintf("%d MiB layer", o.manyMiB)), r.warmTable(warmSys, o.warmClients))
	}
	proto := "h2 by ALPN"
	if o.tlsHTTP1 {
		proto = "HTTP/1.1 only (`--tls-http1`)"
	}
	if o.runs("tls") {
		add("3b. Warm blob throughput over TLS: ours through the CONNECT shim vs a direct TLS download",
			fmt.Sprintf("Clients speak TLS (%s), each on its own connection: directly to the TLS upstream, or to `https://%s/…` through our proxy as their HTTPS proxy (CONNECT, TLS terminated by the shim with its own CA) from a cache filled through the shim. Rounds interleaved.", proto, upstreamTLSHost),
			r.warmTable([]string{sysDirectTLS, sysShim}, o.warmClients))
	}
	if o.runs("manifest") {
		add("4. Manifests by tag: upstream requests", fmt.Sprintf("One client GETs the manifest by tag %d times in a row (after one GET that filled the cache); %s per system. The tag `v1` falls in the default tier (`MANIFEST_CACHE_DEFAULT_TIME`, 1 h) when the cache is on.", o.tagPulls, plural(o.repeat, "run")), r.tagTable())
		add("4b. Cached manifest GETs: latency at "+fmt.Sprint(o.manClients)+" concurrent clients", fmt.Sprintf("A Go load generator: %d clients, each on a keep-alive connection of its own (opened before the timed part), GET the manifest by tag one request after the other, as fast as they can, for %gs (at most %d GETs each); latency of every GET, %s per system, the systems interleaved.", o.manClients, o.manSeconds, o.manRequests, plural(o.repeat, "run")), r.latencyTable())
	}
	if o.runs("memory") {
		add("5. Memory", "Peak RSS is the sum of `VmHWM` over the system's processes (nginx: master, workers, cache manager), reset before each run through `/proc/<pid>/clear_refs`. RssAnon is the process's own memory without the executable's pages, sampled every 20 ms.", r.memoryTable())
	}
	if o.runs("scaling") {
		add("6. Scaling with the blob size, "+fmt.Sprint(o.clients)+" cold clients", "The cost should grow with the blob, not with the number of clients: 1.00× upstream bytes for every size.", r.scalingTable())
	}
	if o.runs("replicas") {
		r.replicaSections(add)
	}
	return out
}

func (r *report) tables() string {
	return strings.Join(r.sections(), "\n")
}

// goal is one target with its verdict.
type goal struct {
	goal, measured string
	pass, ran      bool
}

// targetList evaluates every target, in the order of the table.
func (r *report) targetList() []goal {
	return []goal{
		r.upstreamBytesGoal(),
		r.coldVsNginxGoal(),
		r.coldVsOneClientGoal(),
		r.warmPlainGoal(),
		r.warmShimGoal(),
		r.manifestCacheGoal(),
		r.coldRSSGoal(),
		r.warmRSSGoal(),
		r.replicasGoal(),
	}
}

// sampled returns the row of kind for sys, img and n when it has samples,
// else nil.
func (r *report) sampled(kind, sys string, img *image, n int) *row {
	x := r.b.find(kind, sys, img, n)
	if x == nil || len(x.samples) == 0 {
		return nil
	}
	return x
}

// median is the median of f over x's samples.
func median(x *row, f func(sample) float64) float64 { return x.series(f).med }

// coldImages are the images of the cold targets: the big and the layered
// one, then the scaling images (nil where an image was not pushed).
func (r *report) coldImages() []*image {
	imgs := []*image{r.b.big, r.b.layered}
	for _, m := range r.b.o.scalingMiB {
		if img := r.b.singles[m]; !slices.Contains(imgs, img) {
			imgs = append(imgs, img)
		}
	}
	return imgs
}

// vsNginx fills t from ours' and nginx's cold rows at --clients for every
// cold image both ran: cmp says what was measured and whether the target
// holds.
func (r *report) vsNginx(t *goal, cmp func(img *image, x, n *row) (string, bool)) {
	o := r.b.o
	var parts []string
	for _, img := range r.coldImages() {
		x, n := r.sampled(kindCold, sysOurs, img, o.clients), r.sampled(kindCold, sysNginx, img, o.clients)
		if img == nil || x == nil || n == nil {
			continue
		}
		t.ran = true
		part, ok := cmp(img, x, n)
		parts = append(parts, part)
		t.pass = t.pass && ok
	}
	t.measured = strings.Join(parts, "; ")
}

// upstreamBytesGoal: ours fetches each cold image from upstream once.
func (r *report) upstreamBytesGoal() goal {
	o := r.b.o
	t := goal{goal: fmt.Sprintf("upstream bytes for %d cold clients = 1.0× the image", o.clients), pass: true}
	var parts []string
	for _, img := range r.coldImages() {
		x := r.sampled(kindCold, sysOurs, img, o.clients)
		if img == nil || x == nil {
			continue
		}
		t.ran = true
		s := x.upBytes()
		parts = append(parts, fmt.Sprintf("%s: %.2f× worst", img.label, s.hi))
		if s.hi != 1 || s.lo != 1 {
			t.pass = false
		}
		if d := r.sampled(kindCold, sysDist, img, o.clients); d != nil {
			parts[len(parts)-1] += fmt.Sprintf(" (distribution %.2f×)", d.upBytes().med)
		}
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// coldVsNginxGoal: ours' cold wall time at --clients against nginx's.
func (r *report) coldVsNginxGoal() goal {
	t := goal{goal: fmt.Sprintf("%d-client cold wall time ≤ 1.0× nginx with proxy_cache_lock", r.b.o.clients), pass: true}
	r.vsNginx(&t, func(img *image, x, n *row) (string, bool) {
		a, b := x.wall().med, n.wall().med
		return fmt.Sprintf("%s: %.2fs vs %.2fs = %.2f×", img.label, a, b, a/b), a <= b
	})
	return t
}

// coldVsOneClientGoal: ours' cold wall time at --clients against its
// 1-client time, with the floors (warm, nginx) for comparison.
func (r *report) coldVsOneClientGoal() goal {
	o := r.b.o
	t := goal{goal: fmt.Sprintf("%d-client cold wall time ≤ 1.2× our 1-client time", o.clients), pass: true}
	var parts []string
	for _, img := range []*image{r.b.big, r.b.layered} {
		x, one := r.sampled(kindCold, sysOurs, img, o.clients), r.sampled(kindCold, sysOurs, img, 1)
		if img == nil || x == nil || one == nil {
			continue
		}
		t.ran = true
		a, b := x.wall().med, one.wall().med
		parts = append(parts, fmt.Sprintf("%s: %.2fs vs %.2fs = %.2f×", img.label, a, b, a/b)+r.coldFloors(img, b))
		if a > 1.2*b {
			t.pass = false
		}
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// coldFloors describes, for the cold pull of img by --clients clients,
// ours serving them warm and nginx's cold and warm ratios; one is our
// 1-client cold wall time.
func (r *report) coldFloors(img *image, one float64) string {
	o := r.b.o
	var s string
	if w := r.sampled(kindWarm, sysOurs, img, o.clients); w != nil {
		// The floor: the same bytes to the same clients with
		// nothing to fetch.
		s += fmt.Sprintf("; ours serving %d clients warm: %.2fs", o.clients, w.wall().med)
	}
	n, n1 := r.sampled(kindCold, sysNginx, img, o.clients), r.sampled(kindCold, sysNginx, img, 1)
	if n == nil || n1 == nil {
		return s
	}
	s += fmt.Sprintf(" (nginx %.2f×", n.wall().med/n1.wall().med)
	if w := r.sampled(kindWarm, sysStatic, img, o.clients); w != nil {
		s += fmt.Sprintf("; %d clients from nginx sendfile, warm: %.2fs = %.2f× our 1-client time", o.clients, w.wall().med, w.wall().med/one)
	}
	return s + ")"
}

// warmPlainGoal: ours' warm plain-HTTP throughput against nginx sendfile.
func (r *report) warmPlainGoal() goal {
	t := goal{goal: "warm plain-HTTP throughput ≥ 0.9× nginx sendfile", pass: true}
	var parts []string
	for _, n := range r.b.o.warmClients {
		img := r.b.warmImage(n)
		if x, s := r.sampled(kindWarm, sysOurs, img, n), r.sampled(kindWarm, sysStatic, img, n); x != nil && s != nil {
			t.ran = true
			a, b := x.mbps().med, s.mbps().med
			parts = append(parts, fmt.Sprintf("%d clients: %.0f vs %.0f MB/s = %.2f×", n, a, b, a/b))
			if a < 0.9*b {
				t.pass = false
			}
		}
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// warmShimGoal: warm throughput through the shim against the direct TLS
// download.
func (r *report) warmShimGoal() goal {
	t := goal{goal: "warm throughput through the shim ≥ 1.0× the direct TLS download", pass: true}
	cpu := func(s sample) float64 { return s.cpu.Seconds() }
	var parts []string
	for _, n := range r.b.o.warmClients {
		img := r.b.warmImage(n)
		if x, d := r.sampled(kindWarm, sysShim, img, n), r.sampled(kindWarm, sysDirectTLS, img, n); x != nil && d != nil {
			t.ran = true
			a, b := x.mbps().med, d.mbps().med
			parts = append(parts, fmt.Sprintf("%d clients: %.0f vs %.0f MB/s = %.2f× (CPU per round %.2f s vs %.2f s)", n, a, b, a/b,
				median(x, cpu), median(d, cpu)))
			if a < b {
				t.pass = false
			}
		}
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// manifestCacheGoal: with the manifest cache on, tag pulls inside the TTL
// reach the upstream not at all, sequential or concurrent.
func (r *report) manifestCacheGoal() goal {
	o := r.b.o
	t := goal{goal: "manifest cache on: 0 upstream requests for tags inside their TTL", pass: true}
	var parts []string
	up := func(s sample) float64 {
		return float64(s.upstream.ManifestRequests + s.upstream.BlobRequests + s.upstream.OtherRequests)
	}
	for _, x := range r.rowsOf(kindTags, nil, 0) {
		switch x.sys {
		case sysOursOn:
			t.ran = true
			parts = append(parts, fmt.Sprintf("ours: %.0f per %d tag pulls", x.series(up).hi, o.tagPulls))
			if x.series(up).hi != 0 {
				t.pass = false
			}
		case sysOursOff, sysDist:
			parts = append(parts, fmt.Sprintf("%s: %.0f", plainLabel(x.sys), x.series(up).med))
		}
	}
	if x := r.sampled(kindLatency, sysOursOn, r.b.big, o.manClients); x != nil {
		t.ran = true
		parts = append(parts, fmt.Sprintf("ours at %d concurrent clients: %.0f in %.0f GETs", o.manClients, x.series(up).hi, median(x, func(s sample) float64 { return float64(s.reqs) })))
		if x.series(up).hi != 0 {
			t.pass = false
		}
	}
	t.measured = strings.Join(parts, "; ")
	return t
}

// coldRSSGoal: ours' peak RSS at --clients cold clients against nginx's.
func (r *report) coldRSSGoal() goal {
	t := goal{goal: fmt.Sprintf("peak RSS ≤ nginx's at %d cold clients", r.b.o.clients), pass: true}
	rss := func(s sample) float64 { return mib(s.rss) }
	anon := func(s sample) float64 { return mib(s.anon) }
	r.vsNginx(&t, func(img *image, x, n *row) (string, bool) {
		return fmt.Sprintf("%s: %.1f vs %.1f MiB (RssAnon %.1f vs %.1f)", img.label, median(x, rss), median(n, rss), median(x, anon), median(n, anon)),
			median(x, rss) <= median(n, rss)
	})
	return t
}

// warmRSSGoal: ours' worst peak RSS at --mem-clients warm pulls.
func (r *report) warmRSSGoal() goal {
	o := r.b.o
	t := goal{goal: fmt.Sprintf("peak RSS < 100 MiB at %d concurrent warm pulls", o.memClients)}
	if x := r.sampled(kindWarm, sysOurs, r.b.warmImage(o.memClients), o.memClients); x != nil {
		t.ran = true
		s := x.series(func(s sample) float64 { return mib(s.rss) })
		t.measured = fmt.Sprintf("%.1f MiB worst (RssAnon %.1f)", s.hi, x.series(func(s sample) float64 { return mib(s.anon) }).hi)
		t.pass = s.hi < 100
	}
	return t
}

func (r *report) targetTable() string {
	var b strings.Builder
	b.WriteString("| target | measured (medians unless noted) | result |\n|---|---|---|\n")
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

func (r *report) failedTargets() []string {
	var out []string
	for _, t := range r.targetList() {
		if t.ran && !t.pass {
			out = append(out, t.goal+": "+t.measured)
		}
	}
	return out
}

// losses lists every row where a peer does better than ours on the row's
// main figure (medians).
func (r *report) losses() []string {
	var out []string
	out = append(out, r.coldLosses()...)
	out = append(out, r.warmLosses()...)
	return append(out, lossesIn("cached manifest GETs", r.rowsOf(kindLatency, nil, 0), sysOursOn, lossP50, lossP99)...)
}

// metric is a row's figure that losses compares.
type metric struct {
	name   string
	f      func(sample) float64
	higher bool // higher is better
	unit   string
}

// The figures losses compares.
var (
	lossWall     = metric{"wall time", func(s sample) float64 { return s.wall.Seconds() }, false, "s"}
	lossThr      = metric{"throughput", func(s sample) float64 { return mbps(s.bytes, s.wall) }, true, "MB/s"}
	lossUpstream = metric{"upstream blob bytes", func(s sample) float64 { return float64(s.upstream.BlobBytes) / (1 << 20) }, false, "MiB"}
	lossRSS      = metric{"peak RSS", func(s sample) float64 { return mib(s.rss) }, false, "MiB"}
	lossP50      = metric{"p50 latency", func(s sample) float64 { return ms(s.p50) }, false, "ms"}
	lossP99      = metric{"p99 latency", func(s sample) float64 { return ms(s.p99) }, false, "ms"}
)

// lossesIn lists the rows of a scenario where a peer beats the row of
// oursSys on one of metrics (none without that row). The upstream itself is no
// peer for upstream bytes.
func lossesIn(scenario string, rows []*row, oursSys string, metrics ...metric) []string {
	var o *row
	for _, x := range rows {
		if x.sys == oursSys {
			o = x
		}
	}
	if o == nil {
		return nil
	}
	var out []string
	for _, m := range metrics {
		ov := o.series(m.f).med
		for _, x := range rows {
			if isOurs(x.sys) || (m.name == lossUpstream.name && x.sys == sysDirect) {
				continue
			}
			v := x.series(m.f).med
			worse := (m.higher && v > ov) || (!m.higher && v < ov)
			if worse {
				out = append(out, fmt.Sprintf("%s — %s: %s %.4g %s vs ours %.4g %s (%.2f×)", scenario, m.name, plainLabel(x.sys), v, m.unit, ov, m.unit, ov/v))
			}
		}
	}
	return out
}

// coldLosses are the losses of the cold rows, by image in the order the
// rows were measured, at 1 and --clients clients.
func (r *report) coldLosses() []string {
	var out []string
	seen := map[*image]bool{}
	for _, x := range r.b.rows {
		if x.kind != kindCold || seen[x.img] {
			continue
		}
		seen[x.img] = true
		for _, n := range []int{1, r.b.o.clients} {
			out = append(out, lossesIn(fmt.Sprintf("cold %s, %d client(s)", x.img.label, n), r.rowsOf(kindCold, x.img, n), sysOurs, lossWall, lossUpstream, lossRSS)...)
		}
	}
	return out
}

// warmLosses are the losses of the warm rows, plain HTTP and TLS apart, by
// client count.
func (r *report) warmLosses() []string {
	var out []string
	ns := append(slices.Clone(r.b.o.warmClients), r.b.o.memClients)
	slices.Sort(ns)
	for _, n := range slices.Compact(ns) {
		img := r.b.warmImage(n)
		if img == nil {
			continue
		}
		rows := r.rowsOf(kindWarm, img, n)
		plain := slices.DeleteFunc(slices.Clone(rows), func(x *row) bool { return x.sys == sysShim || x.sys == sysDirectTLS })
		out = append(out, lossesIn(fmt.Sprintf("warm %d clients", n), plain, sysOurs, lossThr, lossRSS)...)
		tls := slices.DeleteFunc(slices.Clone(rows), func(x *row) bool { return x.sys != sysShim && x.sys != sysDirectTLS })
		out = append(out, lossesIn(fmt.Sprintf("warm %d clients over TLS", n), tls, sysShim, lossThr)...)
	}
	return out
}

// markdown is the whole page (docs/benchmarks.md).
func (r *report) markdown() string {
	var b strings.Builder
	r.writeMachine(&b)
	r.writeMethod(&b)
	r.writeCharts(&b)
	r.writeResults(&b)
	r.writeNotes(&b)
	return b.String()
}

// writeMachine writes the title and the Machine section.
func (r *report) writeMachine(b *strings.Builder) {
	m := r.machine
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `bench/run.sh` (program `bench/cmd/bench`); rerun it to refresh this page. Our proxy (**ours**) side by side with its peers, in one run on one machine, against one upstream.\n\n")
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(b, "- CPUs (nproc): %d — %s; memory %s\n", m.nproc, m.cpu, m.memTotal)
	fmt.Fprintf(b, "- kernel (uname -r): %s\n", m.kernel)
	fmt.Fprintf(b, "- Go: %s\n", m.goVersion)
	fmt.Fprintf(b, "- upstream and distribution peer: %s (Debian `docker-registry`, filesystem storage)\n", m.registryVer)
	fmt.Fprintf(b, "- nginx: %s (Debian `nginx`)\n", strings.TrimPrefix(m.nginxVer, "nginx version: "))
	fmt.Fprintf(b, "- ours: %s\n", m.proxyVersion)
	if r.b.s3 != nil {
		fmt.Fprintf(b, "- ours on S3 (replicas rows): %s; S3 server: versitygw (%s, posix backend, metadata in a sidecar directory); Redis: %s (Debian `redis-server`)\n", m.fullVersion, r.b.s3Ver, r.b.redisVer)
	}
	fmt.Fprintf(b, "- date: %s; whole run %.0fs\n", m.date, r.took.Seconds())
	fmt.Fprintf(b, "- load average (1, 5, 15 min) at start: %s; at end: %s\n", m.load0, m.load1)
	fmt.Fprintf(b, "- clients: %s\n\n", r.clientMode())
}

// writeMethod writes the Command and Systems sections: what ran, and how
// it was measured.
func (r *report) writeMethod(b *strings.Builder) {
	o := r.b.o
	cmd := o.command
	if cmd == "" {
		cmd = strings.Join(os.Args, " ")
	}
	b.WriteString("## Command\n\n```sh\n" + cmd + "\n```\n\n")
	b.WriteString("`bench/run.sh --help` lists the flags: `--only cold,image,scaling,warm,tls,manifest,memory,replicas` runs a subset, `--systems` picks the peers, `--size-mib`, `--clients`, `--warm-clients`, `--scaling-mib`, `--layers`/`--layer-mib`, `--mem-clients`, `--manifest-clients`, `--hit-kib`, `--hit-requests`, `--repeat` change sizes and concurrency. `bench/run.sh --only load` runs the load generator alone (`bench/cmd/load`: 1,000 keep-alive clients on warm content; its section below is kept by the full run).\n\n")
	b.WriteString("## Systems\n\n")
	b.WriteString("All on 127.0.0.1, started by the benchmark with temporary directories and stopped by PID. The upstream is one docker-registry holding the pushed images (random, incompressible layers).\n\n")
	fmt.Fprintf(b, "- **ours**: `container-registry-proxy` built from the working tree, filesystem cache, upstream `%s` mapped to the counting proxy (`insecure: true`); clients use `/v2/%s/<repo>/…`. Defaults otherwise (manifest cache off, as shipped), except in the manifest rows that say so.\n", upstreamHost, upstreamNS)
	b.WriteString("- **distribution 2.8 proxy**: Debian's `docker-registry` in pull-through mode (`proxy.remoteurl` = the counting proxy), filesystem storage.\n")
	b.WriteString("- **nginx proxy_cache + lock**: Debian's nginx, `worker_processes auto`, blob GETs (`/v2/…/blobs/sha256:…`) cached with `proxy_cache` keyed by digest, `proxy_cache_lock on`, `proxy_cache_lock_timeout 880s` (the original project's settings) and `proxy_cache_lock_age 880s` (so that a fill slower than the default 5 s does not send a second request upstream: nginx at its best); manifests and everything else passed to the upstream uncached with the client's `Accept`. The upstream answers blob GETs itself (filesystem storage, no redirect); with a redirecting storage backend nginx would also need `proxy_intercept_errors` and an `error_page` for 307 to cache anything.\n")
	b.WriteString("- **nginx static (sendfile)**: the same nginx serving the upstream's own blob files (`alias` into its storage) with `sendfile on`: the practical limit of this machine for warm blobs.\n")
	b.WriteString("- **upstream direct**: clients talk to docker-registry itself, over plain HTTP, or over TLS to a second instance on the same storage (`http.tls`, throwaway P-256 CA).\n")
	if o.runs("replicas") {
		fmt.Fprintf(b, "- **ours, S3 + Redis** (section 7): the full build (`container-registry-proxy-full`, which the lean one runs for `storage.s3`) with `storage.s3` on one bucket of versitygw (posix backend, plain HTTP on loopback, `forcepathstyle`), `redis` on one `redis-server` (`--save '' --appendonly no`) and `cluster` (`advertise: http://127.0.0.1:<port>`, a shared secret): 1 replica, %d replicas started one after the other (each ready before the next; clients spread over them round-robin), or 1 replica with `storage.redirect: true` (blob hits answer 307 to a presigned URL of the bucket, which the clients follow). Each system (and each cold run) has its own root directory in the bucket and its own Redis prefix; each replica its own local spool directory.\n", clusterReplicas)
	}
	b.WriteString("\n")
	b.WriteString("Upstream bytes and requests are counted by a reverse proxy (`net/http/httputil`) in this program between every caching system and the upstream (a TLS one for the shim). A client does what `docker pull` does: GET the manifest by tag, then the config and the layers (" + fmt.Sprint(o.parallel) + " at a time), each client with a connection of its own; it checks every body's length, and ")
	switch o.verify {
	case "all":
		b.WriteString("every client hashes every body and compares it with the digest. ")
	case "one":
		b.WriteString("the first client of each run hashes its bodies and compares them with the digests (hashing every stream on 2 CPUs would measure SHA-256, not the systems). ")
	default:
		b.WriteString("no body is hashed (`--verify none`). ")
	}
	fmt.Fprintf(b, "Blob bodies that are not hashed: `--client %s` (see Machine). ", o.client)
	b.WriteString("Cells show the median and, in parentheses, min–max over the runs or rounds. MB = 10⁶ bytes; throughput = body bytes of all clients ÷ wall time. \"÷ ours\" is the row's figure divided by ours' in the same scenario. CPU is user+system time of the system's processes during the run. Everything shares the machine's CPUs: the upstream, the counting proxy, the system under test and the clients.\n\n")
}

// writeCharts writes the Charts section, links relative to the page, when
// charts were drawn.
func (r *report) writeCharts(b *strings.Builder) {
	if len(r.chartFiles) == 0 {
		return
	}
	o := r.b.o
	b.WriteString("## Charts\n\n")
	for _, f := range r.chartFiles {
		rel := f
		if o.out != "" {
			if x, err := filepath.Rel(filepath.Dir(o.out), f); err == nil {
				rel = x
			}
		}
		fmt.Fprintf(b, "![%s](%s)\n\n", strings.TrimSuffix(filepath.Base(f), ".png"), rel)
	}
}

// writeResults writes the Targets, Results and "Where a peer beats ours"
// sections.
func (r *report) writeResults(b *strings.Builder) {
	b.WriteString("## Targets\n\n")
	b.WriteString(r.targetTable())
	b.WriteString("\n## Results\n\n")
	b.WriteString(r.tables())
	b.WriteString("\n## Where a peer beats ours\n\n")
	if l := r.losses(); len(l) > 0 {
		b.WriteString("Every row of this run where another system does better than ours on the row's main figure (medians); the analysis below explains them.\n\n")
		for _, x := range l {
			b.WriteString("- " + x + "\n")
		}
	} else {
		b.WriteString("None in this run.\n")
	}
}

// writeNotes writes the Notes section and, from --notes, the Analysis.
func (r *report) writeNotes(b *strings.Builder) {
	o := r.b.o
	b.WriteString("\n## Notes\n\n")
	for _, n := range r.notes() {
		b.WriteString("- " + n + "\n")
	}
	if o.notes != "" {
		if extra, err := os.ReadFile(o.notes); err == nil {
			b.WriteString("\n## Analysis\n\n")
			fmt.Fprintf(b, "(From `%s`, written by hand after a run, with profiles; the numbers above are regenerated on every run.)\n\n", o.notes)
			b.Write(extra)
		}
	}
}

// clientMode says how the clients take plain-HTTP blob bodies (--client).
func (r *report) clientMode() string {
	o := r.b.o
	if o.client == "copy" {
		return "`--client copy`: every client reads blob bodies into user space (Go net/http, like curl), which on a loopback bench costs the machine's CPUs as much as serving them."
	}
	s := fmt.Sprintf("`--client splice`: clients discard blob bodies with splice(2) to /dev/null (zero-copy: a minimal HTTP/1.1 client on a raw TCP connection, body length checked) unless they verify the digest, so that the %d CPUs serve the servers; `--client copy` reads them into user space like curl.", r.machine.nproc)
	switch o.verify {
	case "one":
		s += " The first client of each run verifies, so it copies and hashes."
	case "all":
		s += " With `--verify all` every client verifies, so all copy and hash."
	}
	return s + " Manifests and the TLS rows always use Go's net/http (TLS cannot be spliced)."
}

func (r *report) notes() []string {
	var notes []string
	for _, x := range r.b.rows {
		if len(x.lines) > 0 && isS3(x.sys) {
			notes = append(notes, fmt.Sprintf("Blob GET lines in the access logs of %s (clients' and peers' requests) by `cache=`, cold %s, %d client(s), all runs: %s.", plainLabel(x.sys), x.img.label, x.clients, formatLines(x.lines)))
		} else if len(x.lines) > 0 {
			notes = append(notes, fmt.Sprintf("Blob GET lines in ours' access logs by `cache=`, cold %s, %d client(s), all runs: %s.", x.img.label, x.clients, formatLines(x.lines)))
		}
	}
	notes = append(notes, r.b.notes...)
	notes = append(notes, r.s3Notes()...)
	for _, x := range r.b.rows {
		if x.sys != sysShim && x.sys != sysDirectTLS {
			continue
		}
		ps := map[string]int{}
		for _, s := range x.samples {
			for k, v := range s.protos {
				ps[k] += v
			}
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(ps)) {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, ps[k]))
		}
		notes = append(notes, fmt.Sprintf("%s, %d clients: protocol %s; clients (this program) %s s CPU per round.", plainLabel(x.sys), x.clients,
			strings.Join(parts, ", "), x.series(func(s sample) float64 { return s.selfCPU.Seconds() }).format("%.2f")))
	}
	return notes
}

// formatLines prints access-log cache statuses in a stable order.
func formatLines(m map[string]int) string {
	order := []string{"HIT", "MISS", "STALE", "REVALIDATED", "PASS", "none", "aborted", "redirected"}
	var parts []string
	for _, k := range order {
		if v := m[k]; v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(order, k) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
