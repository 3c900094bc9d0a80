package status

import (
	"context"
	_ "embed"
	"html/template"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/prometheus/client_golang/prometheus"
)

// Fill is a blob download in flight.
type Fill struct {
	Digest, Upstream, Repo string
	Written, Size          int64
	Clients                int
	Started                time.Time
	// Source is where the bytes come from: "upstream", or the URL of the
	// replica that fills the blob for the others.
	Source string
	// ForPeer says another replica asked for it.
	ForPeer bool
}

// Registry is one cached registry, for the setup snippets.
type Registry struct{ Host, Namespace string }

// Source is where the page's figures come from.
type Source struct {
	// Gatherer holds the proxy's metrics (crp_*); nil shows none.
	Gatherer prometheus.Gatherer
	// Fills lists the fills in flight.
	Fills func() []Fill
	// Members lists the replicas sharing the cache (their advertised
	// URLs) and Self this one's; nil for a proxy alone.
	Members func() []string
	Self    string
	// Usage returns the stored bytes and objects.
	Usage func(ctx context.Context) (bytes, objects int64, err error)
	// MaxSize is CACHE_MAX_SIZE.
	MaxSize    int64
	Registries []Registry
	DockerHub  bool
	Version    string
	// Banner answers clients that do not ask for HTML.
	Banner string
	// HideRepositories keeps repository names off the page (config
	// status.showRepositories: false): pulls are not counted per
	// repository, and downloads in flight show their registry only.
	HideRepositories bool
	// Now is the clock (tests).
	Now func() time.Time
}

// Page serves the status page and counts pulls per repository.
type Page struct {
	src  Source
	tmpl *template.Template

	mu    sync.Mutex
	pulls map[string]int64 // "upstream/repo" → manifest GETs by tag
}

//go:embed page.html.tmpl
var pageTemplate string

// New returns a Page.
func New(src Source) *Page {
	if src.Now == nil {
		src.Now = time.Now
	}
	funcs := template.FuncMap{"bytes": human, "pct": pct}
	return &Page{src: src, tmpl: template.Must(template.New("page").Funcs(funcs).Parse(pageTemplate)), pulls: map[string]int64{}}
}

// maxTracked bounds the repositories counted (the least pulled go first).
const maxTracked = 10000

// Track wraps the mirror handler and counts a pull for every GET of a
// manifest by tag; with HideRepositories it returns next, counting
// nothing.
func (p *Page) Track(next http.Handler) http.Handler {
	if p.src.HideRepositories {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		// Only served content counts: refused and unknown names (401, 403,
		// 404) would let anyone plant repository names on the page.
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") || sw.status() != http.StatusOK {
			return
		}
		up, repo, ref := logx.InfoFrom(r.Context()).Route()
		if repo == "" || strings.Contains(ref, ":") {
			return
		}
		key := up + "/" + repo
		p.mu.Lock()
		if _, ok := p.pulls[key]; !ok && len(p.pulls) >= maxTracked {
			p.dropLeast()
		}
		p.pulls[key]++
		p.mu.Unlock()
	})
}

// statusWriter records the status of an answer; it keeps the writer's
// optional interfaces reachable through Unwrap (http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile for the writers that have it.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return io.Copy(s.ResponseWriter, r)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// status is the answer's status (200 when nothing was written).
func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

func (p *Page) dropLeast() {
	var minK string
	var minV int64 = -1
	for k, v := range p.pulls {
		if minV < 0 || v < minV {
			minK, minV = k, v
		}
	}
	delete(p.pulls, minK)
}

// ServeHTTP answers GET /: the status page for browsers, the one-line
// banner for everyone else.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(p.src.Banner))
		return
	}
	data := p.collect(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	if err := p.tmpl.Execute(w, data); err != nil {
		logx.From(r.Context()).WithError(err).Warn("rendering the status page")
	}
}
