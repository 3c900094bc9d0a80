package status

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	dto "github.com/prometheus/client_model/go"
)

type upstreamRow struct {
	Name             string
	Requests, Hits   float64
	Served, Fetched  float64
	HasRate          bool
	Remaining, Limit float64
	RatePct          float64
}

type fillRow struct {
	Digest, Upstream, Repo string
	Written, Size          int64
	Pct                    float64
	Clients                int
	Age                    string
	Source                 string
	ForPeer                bool
}

type repoRow struct {
	Name  string
	Pulls int64
}

type pageData struct {
	Version, Address, Generated        string
	Requests, Hits, HitPct             float64
	FromCache, FromUpstream            float64
	Upstreams                          []upstreamRow
	Fills                              []fillRow
	Members                            []memberRow
	CacheBytes, CacheObjects, MaxSize  int64
	CachePct                           float64
	UsageUnknown                       bool
	Repos                              []repoRow
	ReposHidden                        bool
	RegistriesConf, HostsToml, Daemon  string
	Systemd, CACert, Containerd, Setup string
}

// label returns the value of a metric's label.
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// collect reads every figure of the page. Sources that fail are logged
// and shown as unknown; the page is rendered regardless.
func (p *Page) collect(r *http.Request) pageData {
	ctx := r.Context()
	now := p.src.Now()
	d := pageData{Version: p.src.Version, Address: r.Host, Generated: now.UTC().Format(time.RFC3339), MaxSize: p.src.MaxSize}
	p.traffic(ctx, &d)
	d.Fills = p.fills(now)
	d.Members = p.members()
	p.usage(ctx, &d)
	d.Repos, d.ReposHidden = p.topRepos(reposShown), p.src.HideRepositories
	p.snippets(&d)
	return d
}

// traffic fills in the request and byte totals and the per-upstream rows
// from the crp_* metrics.
func (p *Page) traffic(ctx context.Context, d *pageData) {
	if p.src.Gatherer == nil {
		return
	}
	fams, err := p.src.Gatherer.Gather()
	if err != nil {
		// Gather returns what it could read beside the error: show that.
		logx.From(ctx).WithError(err).Warn("status page: some metrics could not be read")
	}
	ups := map[string]*upstreamRow{}
	row := func(name string) *upstreamRow {
		if ups[name] == nil {
			ups[name] = &upstreamRow{Name: name}
		}
		return ups[name]
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			d.add(f.GetName(), m, row)
		}
	}
	if d.Requests > 0 {
		d.HitPct = 100 * d.Hits / d.Requests
	}
	for _, u := range ups {
		if u.HasRate && u.Limit > 0 {
			u.RatePct = 100 * u.Remaining / u.Limit
		}
		d.Upstreams = append(d.Upstreams, *u)
	}
	sort.Slice(d.Upstreams, func(i, j int) bool { return d.Upstreams[i].Name < d.Upstreams[j].Name })
}

// add counts one sample of the metric family named family into the
// totals and into its upstream's row.
func (d *pageData) add(family string, m *dto.Metric, row func(upstream string) *upstreamRow) {
	up, v := label(m, "upstream"), value(m)
	switch family {
	case "crp_requests_total":
		d.Requests += v
		row(up).Requests += v
		if label(m, "cache") == "hit" {
			d.Hits += v
			row(up).Hits += v
		}
	case "crp_served_bytes_total":
		if label(m, "source") == "cache" {
			d.FromCache += v
			row(up).Served += v
		} else {
			d.FromUpstream += v
		}
	case "crp_upstream_bytes_total":
		row(up).Fetched += v
	case "crp_ratelimit_remaining":
		row(up).HasRate, row(up).Remaining = true, v
	case "crp_ratelimit_limit":
		row(up).Limit = v
	}
}

// fills lists the fills in flight with their progress and age at now.
func (p *Page) fills(now time.Time) []fillRow {
	if p.src.Fills == nil {
		return nil
	}
	var out []fillRow
	for _, f := range p.src.Fills() {
		fr := fillRow{Digest: short(f.Digest), Upstream: f.Upstream, Repo: f.Repo, Written: f.Written, Size: f.Size, Clients: f.Clients,
			Age: now.Sub(f.Started).Round(time.Second).String(), Source: f.Source, ForPeer: f.ForPeer}
		if p.src.HideRepositories {
			fr.Repo = ""
		}
		if f.Size > 0 {
			fr.Pct = 100 * float64(f.Written) / float64(f.Size)
		}
		out = append(out, fr)
	}
	return out
}

// memberRow is one replica of the cluster on the page.
type memberRow struct {
	URL  string
	Self bool
}

// members lists the replicas, this one marked.
func (p *Page) members() []memberRow {
	if p.src.Members == nil {
		return nil
	}
	var out []memberRow
	for _, u := range p.src.Members() {
		out = append(out, memberRow{URL: u, Self: u == p.src.Self})
	}
	return out
}

// usage fills in the cache's stored bytes and objects; when the index
// cannot say, the page shows them as unknown rather than as an empty
// cache.
func (p *Page) usage(ctx context.Context, d *pageData) {
	if p.src.Usage == nil {
		return
	}
	bytes, objects, err := p.src.Usage(ctx)
	if err != nil {
		logx.From(ctx).WithError(err).Warn("status page: cache usage unknown")
		d.UsageUnknown = true
		return
	}
	d.CacheBytes, d.CacheObjects = bytes, objects
	if d.MaxSize > 0 {
		d.CachePct = 100 * float64(d.CacheBytes) / float64(d.MaxSize)
	}
}

// reposShown is how many repositories the page lists.
const reposShown = 10

// topRepos returns the n most pulled repositories, most pulled first.
func (p *Page) topRepos(n int) []repoRow {
	p.mu.Lock()
	out := make([]repoRow, 0, len(p.pulls))
	for k, v := range p.pulls {
		out = append(out, repoRow{k, v})
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pulls != out[j].Pulls {
			return out[i].Pulls > out[j].Pulls
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func short(dg string) string {
	if i := strings.IndexByte(dg, ':'); i >= 0 && len(dg) > i+13 {
		return dg[:i+13]
	}
	return dg
}

func (p *Page) snippets(d *pageData) {
	addr := d.Address
	var rc, ht strings.Builder
	regs := append([]Registry(nil), p.src.Registries...)
	if p.src.DockerHub {
		regs = append([]Registry{{Host: "docker.io", Namespace: "docker.io"}}, regs...)
	}
	for _, r := range regs {
		fmt.Fprintf(&rc, "[[registry]]\nprefix = %q\nlocation = %q\n[[registry.mirror]]\nlocation = \"%s/%s\"\ninsecure = true\n\n", r.Host, r.Host, addr, r.Namespace)
	}
	fmt.Fprintf(&ht, "# /etc/containerd/certs.d/_default/hosts.toml\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", addr)
	d.RegistriesConf = strings.TrimSpace(rc.String())
	d.HostsToml = ht.String()
	d.Daemon = fmt.Sprintf("{ \"registry-mirrors\": [\"http://%s\"] }", addr)
	d.Systemd = fmt.Sprintf("curl -fsSL http://%s/setup/systemd | sudo bash", addr)
	d.Containerd = fmt.Sprintf("curl -fsSL http://%s/setup/containerd | sudo bash", addr)
	d.CACert = fmt.Sprintf("curl -fsSLo ca.crt http://%s/ca.crt", addr)
	d.Setup = fmt.Sprintf("http://%s/setup/registries.conf", addr)
}

// human formats the template's byte counts (int64 or float64).
func human(n any) string {
	switch v := n.(type) {
	case int64:
		return HumanBytes(float64(v))
	case float64:
		return HumanBytes(v)
	case int:
		return HumanBytes(float64(v))
	}
	return fmt.Sprint(n)
}

// HumanBytes formats a byte count with binary units ("3.4 MiB"), as the
// status page, du, gc and warm print them.
func HumanBytes(f float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", f)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f) }
