package shim

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// serveIntercepted answers one request that arrived inside a terminated
// CONNECT: registry reads go to the mirror as namespaced requests; pushes
// (when allowed), token realms and other paths go to the real host.
func (s *Shim) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	target := targetOf(r.Context())
	if target == "" {
		writeOCI(w, r, oci.Errorf(http.StatusBadRequest, oci.CodeUnsupported, "unknown intercepted connection"))
		return
	}
	s.route(w, r, target)
}

// route sends a request for target (a canonical host) to the mirror or to
// the real host.
func (s *Shim) route(w http.ResponseWriter, r *http.Request, target string) {
	ns, isRegistry := s.opts.Namespace(target)
	p := r.URL.Path
	isAPI := p == "/v2" || strings.HasPrefix(p, "/v2/")
	switch {
	case !isRegistry || !isAPI:
		s.forward(w, r, target)
	case p == "/v2" || p == "/v2/":
		if s.opts.AllowPush {
			// The client learns the registry's own auth challenge, which
			// it needs for pushes; pulls still come from the mirror.
			s.forward(w, r, target)
			return
		}
		s.mirror.ServeHTTP(w, rewrite(r, "/v2/"))
	case r.Method == http.MethodGet || r.Method == http.MethodHead ||
		!(s.opts.AllowPush || (s.opts.AllowPushWithOwnAuth && r.Header.Get("Authorization") != "")):
		// Writes with ALLOW_PUSH=false reach the mirror too, which
		// answers 405 UNSUPPORTED naming the setting.
		s.mirror.ServeHTTP(w, rewrite(r, "/v2/"+ns+"/"+strings.TrimPrefix(p, "/v2/")))
	default:
		s.push(w, r, target)
	}
}

// rewrite returns r aimed at path on the in-process mirror, keeping
// method, headers (Range, Accept, Authorization), query and body.
func rewrite(r *http.Request, path string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.URL.Path = path
	r2.URL.RawPath = ""
	r2.URL.Scheme, r2.URL.Host = "", ""
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}

// writeOCI answers err as an OCI error envelope.
func writeOCI(w http.ResponseWriter, r *http.Request, err error) {
	status, body := oci.EnvelopeFor(err)
	logx.From(r.Context()).WithError(err).WithField(logx.FieldStatus, status).Info("shim request failed")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// forward proxies r to the real target host (or its configured endpoint)
// with verified TLS, unchanged: the client's own Authorization goes along.
func (s *Shim) forward(w http.ResponseWriter, r *http.Request, target string) {
	base, rt := s.opts.Forward(target)
	if base == nil {
		writeOCI(w, r, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "no route to %s", target))
		return
	}
	logx.InfoFrom(r.Context()).SetCache("PASS")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = base.Scheme
			pr.Out.URL.Host = base.Host
			pr.Out.Host = base.Host
			pr.Out.Header.Del("Proxy-Authorization")
		},
		Transport:     rt,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			relocate(resp, base, target)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeOCI(w, r, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "forwarding to %s failed", target))
		},
	}
	rp.ServeHTTP(w, r)
}

// relocate points absolute Location headers that name the endpoint back
// at the host the client asked for, so its next request (an upload URL)
// comes back through the tunnel.
func relocate(resp *http.Response, base *url.URL, target string) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || !strings.EqualFold(u.Host, base.Host) {
		return
	}
	host := target
	if target == oci.DockerHub {
		host = oci.DockerHubAPI
	}
	u.Scheme, u.Host = "https", host
	resp.Header.Set("Location", u.String())
}

// manifestPath matches /v2/<repo>/manifests/<ref>.
var manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)

// push forwards a write to the real registry: the body streamed, or first
// buffered in a temporary file (PROXY_REQUEST_BUFFERING), never in memory.
// A successful manifest PUT or DELETE drops the cached tag record.
func (s *Shim) push(w http.ResponseWriter, r *http.Request, target string) {
	logx.InfoFrom(r.Context()).SetCache("PASS")
	if r.Body != nil && r.Body != http.NoBody {
		body := &bodyTimeout{r: r.Body, rc: http.NewResponseController(w), d: s.opts.BodyTimeout}
		if s.opts.RequestBuffering {
			f, n, err := spoolBody(body, s.opts.SpoolDir)
			if err != nil {
				writeOCI(w, r, oci.Wrap(http.StatusBadRequest, oci.CodeSizeInvalid, err, "reading the pushed body"))
				return
			}
			defer f.Close()
			r = r.Clone(r.Context())
			r.Body, r.ContentLength = io.NopCloser(f), n
			r.Header.Set("Content-Length", fmt.Sprint(n))
			r.TransferEncoding = nil
		} else {
			r = r.Clone(r.Context())
			r.Body = io.NopCloser(body)
		}
	}
	rec := &statusRecorder{ResponseWriter: w}
	s.forward(rec, r, target)
	if m := manifestPath.FindStringSubmatch(r.URL.Path); m != nil && s.opts.OnManifestChange != nil {
		ok := (r.Method == http.MethodPut && rec.status == http.StatusCreated) ||
			(r.Method == http.MethodDelete && rec.status == http.StatusAccepted)
		if ok {
			s.opts.OnManifestChange(r.Context(), target, m[1], m[2])
		}
	}
}

// spoolBody copies a pushed body into an unlinked temporary file.
func spoolBody(body io.Reader, dir string) (*os.File, int64, error) {
	f, err := os.CreateTemp(dir, "crp-push-*")
	if err != nil {
		return nil, 0, err
	}
	_ = os.Remove(f.Name())
	n, err := io.Copy(f, body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// bodyTimeout bounds the silence between two reads of a request body
// (CLIENT_BODY_TIMEOUT).
type bodyTimeout struct {
	r  io.Reader
	rc *http.ResponseController
	d  time.Duration
}

func (b *bodyTimeout) Read(p []byte) (int, error) {
	if b.d > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	return b.r.Read(p)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// handleAbsolute serves absolute-form requests (HTTP_PROXY users):
// registries we cache are answered by the mirror, other plain-HTTP URLs
// are forwarded under the same address rules as tunnels.
func (s *Shim) handleAbsolute(w http.ResponseWriter, r *http.Request) {
	info := logx.InfoFrom(r.Context())
	user, ok := s.proxyUser(w, r)
	if !ok {
		return
	}
	if user != "" {
		r = r.WithContext(auth.WithClient(r.Context(), auth.Client{User: user}))
	}
	if r.URL.Scheme != "http" {
		plainError(w, http.StatusBadRequest, "only http:// URLs can be proxied in absolute form; use CONNECT for https")
		return
	}
	hostport := r.URL.Host
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(r.URL.Hostname(), "[]"), "80")
	}
	canon := CanonicalTarget(strings.TrimSuffix(hostport, ":80"))
	if s.opts.Policy.Intercepted != nil && s.opts.Policy.Intercepted(canon) {
		if _, ok := s.opts.Namespace(canon); ok {
			info.Set("forward", canon)
			s.route(w, rewrite(r, r.URL.Path), canon)
			return
		}
	}
	policy := s.opts.Policy
	policy.Intercepted = nil
	policy.AllowPorts = append([]int{80}, policy.AllowPorts...)
	dec, reason, err := Decide(hostport, policy)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	info.Set("forward", hostport)
	info.Set("decision", dec.String())
	if dec == Deny {
		plainError(w, http.StatusForbidden, "GET "+r.URL.Host+" refused: "+reason)
		return
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialTunnel(ctx, addr, s.opts.Tunnel)
		},
		ResponseHeaderTimeout: s.opts.Tunnel.ReadTimeout,
	}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.Header.Del("Proxy-Authorization") },
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			plainError(w, http.StatusBadGateway, "forwarding "+r.URL.Host+": "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
}
