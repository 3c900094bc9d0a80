package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/sirupsen/logrus"
)

// serveIntercepted answers one request that arrived inside a terminated
// CONNECT: registry reads go to the mirror as namespaced requests; pushes
// (when allowed), token realms and other paths go to the real host.
func (s *Shim) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	target := targetOf(r.Context())
	if target == "" {
		s.fail(w, r, oci.Errorf(http.StatusBadRequest, oci.CodeUnsupported, "unknown intercepted connection"))
		return
	}
	s.route(w, r, target)
}

// route sends a request for target (a canonical intercepted host) to the
// mirror or to the real host.
func (s *Shim) route(w http.ResponseWriter, r *http.Request, target string) {
	var ns string
	if rt := s.routes[target]; rt != nil {
		ns = rt.namespace
	}
	p := r.URL.Path
	isAPI := p == "/v2" || strings.HasPrefix(p, "/v2/")
	switch {
	case ns == "" || !isAPI:
		s.forward(w, r, target)
	case p == "/v2" || p == "/v2/":
		if s.opts.AllowPush {
			// The client learns the registry's own auth challenge, which
			// it needs for pushes; pulls still come from the mirror.
			s.forward(w, r, target)
			return
		}
		s.mirror.ServeHTTP(w, rewrite(r, "/v2/"))
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.mirror.ServeHTTP(w, rewrite(r, "/v2/"+ns+"/"+strings.TrimPrefix(p, "/v2/")))
	case !s.pushPasses(r):
		s.fail(w, r, s.pushRefused(r))
	default:
		s.push(w, r, target)
	}
}

// pushPasses reports whether a write may pass through to the registry:
// pushes are allowed, or allowed with the client's own credentials and r
// carries them.
func (s *Shim) pushPasses(r *http.Request) bool {
	return s.opts.AllowPush || (s.opts.AllowPushWithOwnAuth && r.Header.Get("Authorization") != "")
}

// ErrPushDisabled is the cause of the 405 UNSUPPORTED that a write through
// the shim gets when pushes may not pass.
var ErrPushDisabled = errors.New("pushes through this proxy are disabled")

// pushRefused is the refusal of a write that may not pass, with
// Options.PushHint (how the operator turns pushes on) when set.
func (s *Shim) pushRefused(r *http.Request) error {
	msg := ErrPushDisabled.Error() + ": it serves pulls only"
	if s.opts.PushHint != "" {
		msg += " (" + s.opts.PushHint + ")"
	}
	return oci.Wrap(http.StatusMethodNotAllowed, oci.CodeUnsupported, ErrPushDisabled, "%s; %s refused", msg, r.Method)
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

// forgetTimeout bounds dropping a cached tag record after a push.
const forgetTimeout = 30 * time.Second

// manifestPath matches /v2/<repo>/manifests/<ref>.
var manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)

// push forwards a write to the real registry: the body streamed, or first
// buffered in a temporary file (RequestBuffering), never in memory. A
// successful manifest PUT or DELETE drops the cached tag record.
func (s *Shim) push(w http.ResponseWriter, r *http.Request, target string) {
	logx.InfoFrom(r.Context()).SetCache("PASS")
	if r.Body != nil && r.Body != http.NoBody {
		body := &bodyTimeout{r: r.Body, rc: http.NewResponseController(w), d: s.opts.BodyTimeout}
		r = r.Clone(r.Context())
		if s.opts.RequestBuffering {
			spool, n, err := spoolBody(body, s.opts.SpoolDir)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			defer spool.Close()
			r.Body, r.ContentLength = io.NopCloser(spool), n
			r.Header.Set("Content-Length", fmt.Sprint(n))
			r.TransferEncoding = nil
		} else {
			r.Body = io.NopCloser(body)
		}
	}
	rec := &statusRecorder{ResponseWriter: w}
	s.forward(rec, r, target)
	s.forgetPushedTag(r, target, rec.status)
}

// forgetPushedTag drops the cached tag record after a successful manifest
// PUT (201) or DELETE (202) passed through; a failure is logged, since
// the client's push did succeed.
func (s *Shim) forgetPushedTag(r *http.Request, target string, status int) {
	m := manifestPath.FindStringSubmatch(r.URL.Path)
	ok := (r.Method == http.MethodPut && status == http.StatusCreated) ||
		(r.Method == http.MethodDelete && status == http.StatusAccepted)
	if m == nil || !ok || s.opts.Tags == nil {
		return
	}
	// The client may hang up once it has its answer; the cache must
	// still forget the tag it moved.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), forgetTimeout)
	defer cancel()
	if err := s.opts.Tags.ForgetTag(ctx, target, m[1], m[2]); err != nil {
		logx.From(r.Context()).WithError(err).WithFields(logrus.Fields{
			logx.FieldUpstream: target, logx.FieldRepo: m[1], logx.FieldRef: m[2],
		}).Warn("dropping the cached tag after a push")
	}
}

// spoolBody copies a pushed body into an unlinked temporary file in dir
// and returns it rewound. Its errors are OCI errors: 400 when the body
// could not be read or stored, 500 when no spool file could be made.
func spoolBody(body io.Reader, dir string) (io.ReadCloser, int64, error) {
	f, err := os.CreateTemp(dir, "crp-push-*")
	if err != nil {
		return nil, 0, oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "cannot buffer the pushed body")
	}
	if err := os.Remove(f.Name()); err != nil { //nolint:gosec // G703: the name is CreateTemp's own, in the configured spool directory
		return nil, 0, oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, errors.Join(err, f.Close()), "cannot buffer the pushed body")
	}
	n, err := io.Copy(f, body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, 0, oci.Wrap(http.StatusBadRequest, oci.CodeSizeInvalid, errors.Join(err, f.Close()), "reading the pushed body")
	}
	return f, n, nil
}

// bodyTimeout bounds the silence between two reads of a request body.
type bodyTimeout struct {
	r  io.Reader
	rc *http.ResponseController
	d  time.Duration
}

func (b *bodyTimeout) Read(p []byte) (int, error) {
	if b.d > 0 {
		// A connection without deadlines reads without this bound.
		if err := b.rc.SetReadDeadline(time.Now().Add(b.d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return 0, fmt.Errorf("setting the body read deadline: %w", err)
		}
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
