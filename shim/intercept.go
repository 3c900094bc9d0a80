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
	"github.com/opencontainers/go-digest"
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
	if err := checkPath(r.URL); err != nil {
		s.fail(w, r, err)
		return
	}
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

// forgetTimeout bounds updating the cache after a write passed through.
const forgetTimeout = 30 * time.Second

// The paths of the writes that change what the cache holds:
// /v2/<repo>/manifests/<ref> and /v2/<repo>/blobs/<digest> (upload
// sessions, /blobs/uploads/<id>, never match: their last element is not
// a digest).
var (
	manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	blobPath     = regexp.MustCompile(`^/v2/(.+)/blobs/([^/]+)$`)
)

// push forwards a write to the real registry: the body streamed, or first
// buffered in a temporary file (RequestBuffering), never in memory. What
// a successful write changed is purged from the cache (purge).
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
	hook := &answerHook{ResponseWriter: w}
	hook.before = func(status int) { s.purge(r, target, status, hook.Header()) }
	s.forward(hook, r, target)
}

// purge tells the Purger what a write that the registry accepted
// changed, before the client has any of its answer (answerHook), so that
// its next read sees the change. A failure is logged: the client's write
// did succeed.
func (s *Shim) purge(r *http.Request, target string, status int, answer http.Header) {
	if s.opts.Purger == nil {
		return
	}
	forget, repo, ref := s.forgetting(r, target, status, answer)
	if forget == nil {
		return
	}
	// The client may hang up once it has its answer; the cache must
	// still forget what the write changed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), forgetTimeout)
	defer cancel()
	if err := forget(ctx); err != nil {
		logx.From(r.Context()).WithError(err).WithFields(logrus.Fields{
			logx.FieldUpstream: target, logx.FieldRepo: repo, logx.FieldRef: ref,
		}).Warn("updating the cache after a write passed through")
	}
}

// forgetting returns what the cache must forget after r was answered
// status by the registry, with the repository and reference it names;
// forget is nil when nothing: a manifest PUT (201) moves the tag it names
// (a PUT by digest changes nothing cached: nothing negative is kept), a
// manifest DELETE (202) removes the tag or the manifest it names, a blob
// DELETE (202) the blob. A manifest PUT whose answer names a subject
// (OCI-Subject: a referrer was attached) also drops the subject's
// referrers list.
func (s *Shim) forgetting(r *http.Request, target string, status int, answer http.Header) (forget func(context.Context) error, repo, ref string) {
	put := r.Method == http.MethodPut && status == http.StatusCreated
	del := r.Method == http.MethodDelete && status == http.StatusAccepted
	p := s.opts.Purger
	if m := manifestPath.FindStringSubmatch(r.URL.Path); m != nil && (put || del) {
		repo, ref = m[1], m[2]
		d, err := digest.Parse(ref)
		var first func(context.Context) error
		switch {
		case err != nil:
			first = func(ctx context.Context) error { return p.ForgetTag(ctx, target, repo, ref) }
		case del:
			first = func(ctx context.Context) error { return p.ForgetManifest(ctx, target, repo, d) }
		}
		return withSubject(first, p, put, answer, target, repo), repo, ref
	}
	if m := blobPath.FindStringSubmatch(r.URL.Path); m != nil && del {
		repo, ref = m[1], m[2]
		if d, err := digest.Parse(ref); err == nil {
			return func(ctx context.Context) error { return p.ForgetBlob(ctx, target, repo, d) }, repo, ref
		}
	}
	return nil, "", ""
}

// withSubject adds to forget (which may be nil) dropping the referrers
// list of the subject a manifest PUT's answer names in OCI-Subject.
func withSubject(forget func(context.Context) error, p Purger, put bool, answer http.Header, target, repo string) func(context.Context) error {
	subject, err := digest.Parse(answer.Get("OCI-Subject"))
	if !put || err != nil {
		return forget
	}
	return func(ctx context.Context) error {
		var errs []error
		if forget != nil {
			errs = append(errs, forget(ctx))
		}
		return errors.Join(append(errs, p.ForgetReferrers(ctx, target, repo, subject))...)
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
	if err := os.Remove(f.Name()); err != nil {
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

// answerHook calls before with the response's final status before any
// of the response reaches the client (1xx answers pass untouched): what a
// write changed is purged before the client can send its next request,
// on this connection or another one.
type answerHook struct {
	http.ResponseWriter
	before func(status int)
	called bool
}

func (a *answerHook) WriteHeader(code int) {
	if !a.called && code >= 200 {
		a.called = true
		a.before(code)
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerHook) Write(p []byte) (int, error) {
	if !a.called {
		a.WriteHeader(http.StatusOK)
	}
	return a.ResponseWriter.Write(p)
}

func (a *answerHook) Unwrap() http.ResponseWriter { return a.ResponseWriter }
