package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// SecretHeader carries the cluster secret on requests between replicas.
const SecretHeader = "X-Crp-Cluster-Secret" //nolint:gosec // G101: the header's name, not a credential

// Observer is told what the fill coordinator does (metrics).
type Observer interface {
	// PeerFill: a fill streams from another replica.
	PeerFill()
	// Failover: a fill's source broke and the fill resumed elsewhere.
	Failover()
	// LeaseLost: a fill from upstream lost its lease (it expired or was
	// taken over) while it ran.
	LeaseLost()
}

type nobody struct{}

func (nobody) PeerFill()  {}
func (nobody) Failover()  {}
func (nobody) LeaseLost() {}

// FetcherOptions tune a Fetcher.
type FetcherOptions struct {
	// Secret authenticates this replica to the others (SecretHeader).
	Secret string
	// Client makes the requests to peers. Default: no proxy, 3s to
	// connect, 2m for the answer's headers (the owner waits for upstream's).
	Client *http.Client
	// LeaseTTL is how long a fill's lease lives without renewal (it is
	// renewed every third of it while the fill runs). Default 10s.
	LeaseTTL time.Duration
	// MaxResumes bounds how often one fill resumes after its source broke.
	// Default 4.
	MaxResumes int
	Observer   Observer
	// Log receives failovers and refusals. Default: the fill's logger.
	Log logrus.FieldLogger
}

// Fetcher is the fill coordinator of replicas sharing one Redis, a
// mirror.Fetcher (docs/architecture.md, "Cluster"): a fill takes its
// bytes from upstream only on the replica holding the digest's lease,
// which the digest's rendezvous owner takes; the others stream the
// owner's fill while it arrives. When the source breaks (its replica
// died), the fill resumes at its offset from the next owner, which takes
// the lease over. With Redis down every replica fetches for itself.
type Fetcher struct {
	r    *Redis
	m    *Members
	opts FetcherOptions
}

// NewFetcher returns the coordinator of r's cluster as seen by m.
func NewFetcher(r *Redis, m *Members, opts FetcherOptions) *Fetcher {
	if opts.Client == nil {
		opts.Client = peerClient()
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 10 * time.Second
	}
	if opts.MaxResumes <= 0 {
		opts.MaxResumes = 4
	}
	if opts.Observer == nil {
		opts.Observer = nobody{}
	}
	return &Fetcher{r: r, m: m, opts: opts}
}

// peerClient reaches other replicas directly, never through a proxy from
// the environment.
func peerClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// LeaseKey names the lease, and the rendezvous key, of the fill of blob d
// from upstream: fills of one digest from different upstreams are
// different fills (a client only ever gets bytes from the upstream it
// asked), each with its owner.
func LeaseKey(upstream string, d digest.Digest) string {
	return "fill:" + upstream + "/" + d.String()
}

// Fetch implements mirror.Fetcher.
func (f *Fetcher) Fetch(ctx context.Context, req mirror.FillRequest) (io.ReadCloser, int64, error) {
	log := f.opts.Log
	if log == nil {
		log = logx.From(ctx)
	}
	s := &stream{f: f, req: req, ctx: ctx, size: -1, key: LeaseKey(req.Upstream, req.Digest), log: log}
	if err := s.open(); err != nil {
		s.dropLease()
		return nil, -1, err
	}
	return s, s.size, nil
}

// stream is a fill's body as the coordinator delivers it: from upstream
// (holding the lease) or from a peer, resumed elsewhere when it breaks.
type stream struct {
	f   *Fetcher
	req mirror.FillRequest
	ctx context.Context
	key string
	log logrus.FieldLogger

	off, size int64
	progress  atomic.Int64 // off, for watchPeer
	body      io.ReadCloser
	peer      string // the source when it is a peer
	pending   error  // a read error kept until the bytes before it are taken

	lease      *Lease
	lost       <-chan struct{}
	stopLease  func()
	lostTold   bool
	resumes    int
	conflicted bool // a peer said its fill streams from another one
	closeOnce  sync.Once
}

// errChooseAgain makes open look at the lease again (it changed hands).
var errChooseAgain = errors.New("lease changed hands")

// open finds the source for the bytes from s.off on and opens it.
func (s *stream) open() error {
	for range 8 {
		src, err := s.choose()
		if errors.Is(err, errChooseAgain) {
			continue
		}
		if err != nil {
			return err
		}
		if src == "" {
			return s.openUpstream()
		}
		err = s.openPeer(src)
		var refused *peerRefused
		switch {
		case err == nil:
			s.f.opts.Observer.PeerFill()
			return nil
		case errors.As(err, &refused) && refused.status == http.StatusConflict:
			s.conflicted = true
		case errors.As(err, &refused):
			return refused.err
		case s.ctx.Err() != nil:
			return err
		default:
			s.log.WithError(err).WithField("peer", src).Warn("cluster: replica unreachable; choosing another source for the fill")
			s.f.m.Suspect(src)
		}
	}
	return s.openUpstream()
}

// choose decides where the bytes come from: "" for upstream (with the
// lease when Redis answers), or a peer's URL.
func (s *stream) choose() (string, error) {
	self := s.f.m.Self()
	if s.lease != nil || !s.f.r.Up() {
		return "", nil
	}
	holder, err := s.f.r.Holder(s.ctx, s.key)
	if err != nil {
		return "", nil //nolint:nilerr // Redis down: degraded, fetch for ourselves
	}
	if holder != "" && (holder != self || self == "") {
		if !s.f.m.Suspected(holder) && holder != self {
			if s.req.ForPeer {
				// The asking replica goes to the holder itself: a chain
				// of replicas would leave it nobody to fail over to
				// when the holder dies.
				return "", oci.Errorf(http.StatusConflict, oci.CodeUnavailable,
					"the fill of %s is another replica's (%s)", s.req.Digest, holder)
			}
			return holder, nil
		}
		if self == "" {
			return "", nil
		}
		return "", s.takeOver(holder)
	}
	if holder == self {
		// A lease of ours without a fill: left by a previous life of
		// this replica at the same address.
		return "", s.takeOver(holder)
	}
	owner := s.f.m.Owner(s.key)
	if owner != "" && owner != self && !s.req.ForPeer && !s.conflicted {
		return owner, nil
	}
	if self == "" {
		return "", nil
	}
	l, _, err := s.f.r.Acquire(s.ctx, s.key, self, s.f.opts.LeaseTTL)
	switch {
	case err == nil:
		s.hold(l)
		return "", nil
	case errors.Is(err, ErrLeaseHeld):
		return "", errChooseAgain
	default:
		return "", nil // Redis down: degraded
	}
}

// takeOver takes the lease of a holder that stopped answering.
func (s *stream) takeOver(gone string) error {
	l, err := s.f.r.TakeOver(s.ctx, s.key, gone, s.f.m.Self(), s.f.opts.LeaseTTL)
	switch {
	case err == nil:
		s.hold(l)
		return nil
	case errors.Is(err, ErrLeaseHeld):
		return errChooseAgain
	default:
		return nil // Redis down: degraded
	}
}

func (s *stream) hold(l *Lease) {
	s.lease = l
	s.lost, s.stopLease = l.Keep()
}

func (s *stream) dropLease() {
	if s.stopLease != nil {
		s.stopLease()
		s.lease, s.stopLease, s.lost = nil, nil, nil
	}
}

func (s *stream) openUpstream() error {
	s.req.Source(mirror.SourceUpstream)
	body, size, err := s.req.FromUpstream(s.ctx, s.off)
	if err != nil {
		return err
	}
	if err := s.setSize(size); err != nil {
		body.Close()
		return err
	}
	s.body, s.peer = body, ""
	return nil
}

// setSize records the blob's size; sources must agree on it.
func (s *stream) setSize(size int64) error {
	switch {
	case size < 0:
	case s.size < 0:
		s.size = size
	case s.size != size:
		return oci.Errorf(http.StatusBadGateway, oci.CodeBlobUnknown, "sources disagree on the size of %s: %d and %d", s.req.Digest, s.size, size)
	}
	return nil
}

// peerRefused is a peer's answer other than the blob: 409 (its fill
// streams from another replica) or the upstream's refusal it relays.
type peerRefused struct {
	status int
	err    error
}

func (e *peerRefused) Error() string { return e.err.Error() }

func (s *stream) openPeer(peer string) error {
	s.req.Source(peer)
	u := strings.TrimSuffix(peer, "/") + mirror.PeerPath + s.req.Digest.String() + "?" +
		url.Values{"upstream": {s.req.Upstream}, "repo": {s.req.Repo}}.Encode()
	pctx, cancel := context.WithCancel(s.ctx)
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return &peerRefused{status: http.StatusBadRequest, err: err}
	}
	req.Header.Set(SecretHeader, s.f.opts.Secret)
	if s.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", s.off))
	}
	resp, err := s.f.opts.Client.Do(req)
	if err != nil {
		cancel()
		return err
	}
	size, err := s.peerBody(resp)
	if err != nil {
		cancel()
		return err
	}
	if err := s.setSize(size); err != nil {
		resp.Body.Close()
		cancel()
		return &peerRefused{status: http.StatusBadGateway, err: err}
	}
	w := &watchedBody{ReadCloser: resp.Body, cancel: cancel, done: make(chan struct{})}
	go s.watchPeer(pctx, peer, w)
	s.body, s.peer = w, peer
	return nil
}

// watchedBody is a peer's stream watched for a stall (watchPeer); Close
// ends the watch.
type watchedBody struct {
	io.ReadCloser
	cancel func()
	done   chan struct{}
}

func (w *watchedBody) Close() error {
	w.cancel()
	<-w.done
	return w.ReadCloser.Close()
}

// watchPeer cuts the stream from peer when it sent nothing for a lease
// TTL and no longer holds the digest's lease: a replica that stopped
// (frozen, partitioned) without closing its connections is left like one
// that died, and the fill resumes elsewhere. A peer that holds the lease
// is waited for: its upstream is slow.
func (s *stream) watchPeer(ctx context.Context, peer string, w *watchedBody) {
	defer close(w.done)
	t := time.NewTicker(s.f.opts.LeaseTTL)
	defer t.Stop()
	last := s.progress.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := s.progress.Load(); now != last {
			last = now
			continue
		}
		if holder, err := s.f.r.Holder(ctx, s.key); err == nil && holder != peer {
			s.log.WithFields(logrus.Fields{"peer": peer, "offset": last}).Warn("cluster: the replica filling the blob sends nothing and no longer holds its lease")
			w.cancel()
			return
		}
	}
}

// peerBody checks a peer's answer and returns the blob's size; the body
// is positioned at s.off.
func (s *stream) peerBody(resp *http.Response) (int64, error) {
	switch resp.StatusCode {
	case http.StatusOK:
		if s.off > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, s.off); err != nil {
				resp.Body.Close()
				return -1, err
			}
		}
		return resp.ContentLength, nil
	case http.StatusPartialContent:
		start, _, total, ok := oci.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != s.off {
			resp.Body.Close()
			return -1, &peerRefused{status: http.StatusBadGateway, err: fmt.Errorf("replica answered bytes=%d- with %q", s.off, resp.Header.Get("Content-Range"))}
		}
		return total, nil
	default:
		defer resp.Body.Close()
		return -1, &peerRefused{status: resp.StatusCode, err: peerError(resp)}
	}
}

// peerError reads an OCI error answer of a peer (bounded) into an
// *oci.Error with the same status, so the client gets upstream's answer.
func peerError(resp *http.Response) error {
	var env struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	code, msg := oci.CodeUnavailable, resp.Status
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&env) == nil && len(env.Errors) > 0 {
		code, msg = env.Errors[0].Code, env.Errors[0].Message
	}
	e := oci.Errorf(resp.StatusCode, code, "%s", msg)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.Atoi(ra); err == nil && n > 0 && n < 86400 {
			e.RetryAfter = ra
		}
	}
	return e
}

// Read implements io.Reader: a peer's stream that breaks is resumed at
// the offset reached from the next source; upstream's failures end the
// fill (the mirror reports them).
func (s *stream) Read(p []byte) (int, error) {
	for {
		if s.pending != nil {
			err := s.pending
			s.pending = nil
			if rerr := s.resume(err); rerr != nil {
				return 0, rerr
			}
		}
		n, err := s.body.Read(p)
		s.off += int64(n)
		s.progress.Store(s.off)
		s.checkLease()
		if errors.Is(err, io.EOF) && (s.size < 0 || s.off >= s.size) {
			return n, io.EOF
		}
		if err != nil && (s.peer != "" || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if n > 0 {
				s.pending = err
				return n, nil
			}
			if rerr := s.resume(err); rerr != nil {
				return 0, rerr
			}
			continue
		}
		return n, err
	}
}

// resume continues after the source broke with err: from the next
// source when the source was a peer, else err ends the fill.
func (s *stream) resume(err error) error {
	if s.peer == "" || s.ctx.Err() != nil || s.resumes >= s.f.opts.MaxResumes {
		return err
	}
	s.resumes++
	gone := s.peer
	s.body.Close()
	s.f.m.Suspect(gone)
	s.f.opts.Observer.Failover()
	s.log.WithError(err).WithFields(logrus.Fields{"peer": gone, "offset": s.off}).Warn("cluster: the replica filling the blob broke off; resuming from the next one")
	if oerr := s.open(); oerr != nil {
		return oerr
	}
	return nil
}

func (s *stream) checkLease() {
	if s.lost == nil || s.lostTold {
		return
	}
	select {
	case <-s.lost:
		s.lostTold = true
		s.f.opts.Observer.LeaseLost()
		s.log.Warn("cluster: the fill's lease was lost (Redis unreachable or taken over); the fill goes on, its bytes verified as always")
	default:
	}
}

// settlePoll is how often Settle looks at the lease.
const settlePoll = 100 * time.Millisecond

// Settle implements mirror.Settler: when the bytes came from a peer, it
// waits while that peer still holds the digest's lease (it releases it
// once its fill committed or failed), so that this replica finds the
// blob stored instead of storing it again.
func (s *stream) Settle(ctx context.Context) {
	if s.peer == "" {
		return
	}
	t := time.NewTicker(settlePoll)
	defer t.Stop()
	for {
		holder, err := s.f.r.Holder(ctx, s.key)
		if err != nil || holder != s.peer {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close ends the source and gives the lease up.
func (s *stream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.body != nil {
			err = s.body.Close()
		}
		s.dropLease()
	})
	return err
}

// RequireSecret answers 401 to requests between replicas without the
// cluster secret (compared in constant time) and passes the rest to next.
func RequireSecret(secret string, next http.Handler) http.Handler {
	want := []byte(secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get(SecretHeader))
		if len(want) == 0 || subtle.ConstantTimeCompare(got, want) != 1 {
			oci.WriteError(w, r, oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "requests between replicas need the cluster secret"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
