package load

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// KindStats are the figures of one request kind (or of all).
type KindStats struct {
	Name               string
	Requests, Errors   int64
	Bytes              int64 // body bytes of the successful GETs
	P50, P90, P99, Max time.Duration
}

// fill sets the run's figures from the measured run.
func (r *Result) fill(st *runStats) {
	r.Took = st.took
	var all []time.Duration
	for i, k := range st.kinds {
		ks := KindStats{Name: kinds[i].name, Requests: k.requests, Errors: k.errors, Bytes: k.bytes}
		ks.setPercentiles(k.lat)
		r.Kinds = append(r.Kinds, ks)
		all = append(all, k.lat...)
	}
	r.Total = KindStats{Name: "all", Requests: st.total.requests, Errors: st.total.errors, Bytes: st.total.bytes}
	r.Total.setPercentiles(all)
	r.Errors, r.Samples, r.Cache, r.Conns = st.errs, st.samples, st.cache, st.dials
}

func (k *KindStats) setPercentiles(lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	k.P50, k.P90, k.P99, k.Max = at(0.50), at(0.90), at(0.99), lat[len(lat)-1]
}

// PerSecond is requests per second over the measured run.
func (r *Result) PerSecond(k KindStats) float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(k.Requests) / r.Took.Seconds()
}

// Text is the summary printed at the end of a run.
func (r *Result) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients, %s: %d requests, %.0f req/s, %.0f MB/s, %d errors\n",
		r.Options.Clients, r.Options.Duration, r.Total.Requests, r.PerSecond(r.Total), r.mbps(), r.Total.Errors)
	for _, k := range append(slices.Clone(r.Kinds), r.Total) {
		fmt.Fprintf(&b, "  %-24s %8d req %8.0f/s  errors %d  p50 %s  p90 %s  p99 %s  max %s\n",
			k.Name, k.Requests, r.PerSecond(k), k.Errors, ms(k.P50), ms(k.P90), ms(k.P99), ms(k.Max))
	}
	for _, c := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(&b, "  errors: %s: %d\n", c, r.Errors[c])
	}
	for _, s := range r.Samples {
		fmt.Fprintf(&b, "  error: %s\n", s)
	}
	fmt.Fprintf(&b, "proxy before: %s\nproxy peak:   %s\nproxy after:  %s (%.1fs after the clients closed; back within 10%%: %v)\n",
		r.Before, r.Peak, r.After, r.AfterWait.Seconds(), r.Settled)
	fmt.Fprintf(&b, "upstream requests during the run: %s\n", counts(r.Upstream))
	return b.String()
}

func (r *Result) mbps() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Total.Bytes) / 1e6 / r.Took.Seconds()
}

// Markdown is the report's section for docs/benchmarks.md.
func (r *Result) Markdown(command string) string {
	var b strings.Builder
	o, m := r.Options, r.Machine
	fmt.Fprintf(&b, "## Load: %s clients on warm content for %s\n\n", thousands(int64(o.Clients)), secs(o.Duration))
	b.WriteString("Written by `bench/run.sh --only load` (program `bench/cmd/load`, package `bench/load`); the full `bench/run.sh` keeps this section as it is.\n\n")
	b.WriteString("```sh\n" + command + "\n```\n\n")
	fmt.Fprintf(&b, "- date: %s; load average (1, 5, 15 min) at start: %s; at end: %s\n", r.Date.Format("2006-01-02 15:04 UTC"), m.Load0, m.Load1)
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %s, kernel %s, %s; the generator, the upstream and the proxy share the CPUs\n", m.NProc, m.CPU, m.MemTotal, m.Kernel, m.Go)
	fmt.Fprintf(&b, "- proxy: %s, filesystem cache, defaults (manifest cache off, as shipped: each tag request revalidates upstream, concurrent revalidations of a tag share one HEAD)\n", m.Proxy)
	fmt.Fprintf(&b, "- upstream: distribution v3 in the generator's process, filesystem storage, plain HTTP on loopback; %d images, each a config, a %d KiB and a %d KiB layer\n", o.Images, o.SmallKiB, o.BigKiB)
	fmt.Fprintf(&b, "- clients: %d, each with one keep-alive connection of its own (%d connections opened in the run), each picking requests at random: %s. A request fails on a transport error, a non-2xx status, a wrong Content-Length or body length, or a wrong digest (manifests always, every %dth blob body of each client)\n",
		o.Clients, r.Conns, mixText(), o.VerifyEvery)
	fmt.Fprintf(&b, "- before: after a warm-up (every manifest and blob fetched once, then %s of the same load, the clients closed, %s of rest); peak: the highest reading (every 200 ms) during the run; after: once the clients closed, polled every 250 ms until goroutines and descriptors are back within 10 %% of before (at most %s)\n",
		secs(o.Warm), secs(o.Settle), secs(o.AfterMax))
	fmt.Fprintf(&b, "- open files: the generator raises its soft limit to the hard one (now %d/%d): each client holds a descriptor here and one in the proxy (%d/%d, the Go runtime raises its soft limit too)\n\n",
		m.FDLimit.Soft, m.FDLimit.Hard, m.ProxyFDLimit.Soft, m.ProxyFDLimit.Hard)
	b.WriteString("| request | requests | req/s | errors | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range append(slices.Clone(r.Kinds), r.Total) {
		name := k.Name
		if name == "all" {
			name = "**all**"
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %d | %s | %s | %s | %s |\n", name, thousands(k.Requests), r.PerSecond(k), k.Errors, ms(k.P50), ms(k.P90), ms(k.P99), ms(k.Max))
	}
	fmt.Fprintf(&b, "\nBody bytes: %.0f MB/s. X-Cache of the GETs: %s. Upstream requests during the run: %s. The clients are a closed loop (each sends its next request when the last one ended), so with every CPU busy the latency is mostly the wait for a turn: %s clients ÷ %.0f req/s = %s.\n\n",
		r.mbps(), counts(r.Cache), counts(r.Upstream), thousands(int64(o.Clients)), r.PerSecond(r.Total), ms(time.Duration(float64(o.Clients)/max(r.PerSecond(r.Total), 1)*float64(time.Second))))
	b.WriteString("| proxy process | before | peak | after |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| RSS (VmRSS) | %s | %s | %s |\n", mib(r.Before.RSS), mib(r.Peak.RSS), mib(r.After.RSS))
	fmt.Fprintf(&b, "| goroutines (`go_goroutines`) | %d | %d | %d |\n", r.Before.Goroutines, r.Peak.Goroutines, r.After.Goroutines)
	fmt.Fprintf(&b, "| open descriptors (`/proc/<pid>/fd`) | %d | %d | %d |\n\n", r.Before.FDs, r.Peak.FDs, r.After.FDs)
	verdict := "**pass**"
	if !r.OK() {
		verdict = "**FAIL**"
	}
	fmt.Fprintf(&b, "Result: %s: %d errors in %s requests (%d in the warm-up's %s); goroutines and descriptors back within 10 %% of before: %v (%.1f s after the clients closed). RSS is reported, not checked: the Go heap keeps what it grew to for a while.\n",
		verdict, r.Total.Errors, thousands(r.Total.Requests), r.WarmErrs, thousands(r.WarmReqs), yesNo(r.Settled), r.AfterWait.Seconds())
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "\nErrors by cause: %s. First messages:\n\n", counts(r.Errors))
		for _, s := range r.Samples {
			fmt.Fprintf(&b, "- `%s`\n", s)
		}
	}
	return b.String()
}

// secs prints a duration of whole seconds as "60 s".
func secs(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%d s", int64(d/time.Second))
	}
	return d.String()
}

func mixText() string {
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d %%", k.name, k.weight))
	}
	return strings.Join(parts, ", ")
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %s", name, thousands(m[k])))
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func mib(b int64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// thousands prints n with thin separators: 12,345.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
