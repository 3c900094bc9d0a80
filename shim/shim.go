package shim

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/sirupsen/logrus"
)

// Options configure a Shim.
type Options struct {
	// Policy decides intercept, tunnel or deny per CONNECT.
	Policy Policy
	// Tunnel holds the tunnel timeouts and allowed networks.
	Tunnel TunnelOptions
	// Namespace maps an intercepted canonical host to the mirror's path
	// namespace ("docker.io", "registry.test_25443"). ok is false for
	// intercepted hosts that are not registries (auth.docker.io), whose
	// requests are forwarded to the real host.
	Namespace func(host string) (ns string, ok bool)
	// Forward returns where to forward requests for an intercepted host
	// that the mirror does not answer (pushes, token realms, non-/v2/
	// paths): the base URL (the registry's endpoint) and the transport
	// (verified TLS).
	Forward func(host string) (base *url.URL, rt http.RoundTripper)
	// AllowPush lets writes pass through to the real registry (ALLOW_PUSH).
	AllowPush bool
	// AllowPushWithOwnAuth lets writes that carry the client's own
	// Authorization pass through even without AllowPush
	// (ALLOW_PUSH_WITH_OWN_AUTH).
	AllowPushWithOwnAuth bool
	// RequestBuffering buffers a pushed body in a temporary file in
	// SpoolDir before forwarding it (PROXY_REQUEST_BUFFERING).
	RequestBuffering bool
	SpoolDir         string
	// OnManifestChange is told about a successful manifest PUT or DELETE
	// through the shim, so the cached tag record can be dropped.
	OnManifestChange func(ctx context.Context, host, repo, ref string)
	// Client-side timeouts of the intercepted connections.
	HeaderTimeout, IdleTimeout, SendTimeout, BodyTimeout time.Duration
	// Logger receives the access lines of intercepted requests.
	Logger *logrus.Logger
	// ProxyAuth verifies a Proxy-Authorization header and returns the
	// proxy user (nil: proxy authentication is not configured).
	ProxyAuth func(header string) (user string, ok bool)
	// RequireProxyAuth answers 407 to CONNECT and absolute-form requests
	// without valid Proxy-Authorization.
	RequireProxyAuth bool
	// Observer is told about CONNECT decisions and tunnels (metrics).
	// Default: nobody.
	Observer Observer
}

// Shim is the HTTPS_PROXY front door: an http.Handler that takes CONNECT
// and absolute-form requests and passes every other request to next.
type Shim struct {
	mirror http.Handler
	next   http.Handler
	minter *Minter
	opts   Options

	inner   *http.Server
	ln      *chanListener
	conns   sync.Map // *tls.Conn → *interceptedConn
	closing atomic.Bool

	// active counts CONNECT handlers after hijack; tunnels holds their
	// connections so that a shutdown past its deadline can close them.
	active  sync.WaitGroup
	tunnels sync.Map // net.Conn → struct{}
}

// interceptedConn is one terminated CONNECT: its target and a channel
// closed when the inner server is done with it.
type interceptedConn struct {
	target string
	user   string // proxy user from Proxy-Authorization, "" if none
	done   chan struct{}
	once   sync.Once
}

type ctxKey struct{}

// New returns a Shim that serves intercepted registry requests from
// mirror, passes origin-form requests to next, and mints certificates
// with minter. It starts the inner server that serves terminated
// connections; Close stops it.
func New(mirror, next http.Handler, minter *Minter, opts Options) (*Shim, error) {
	if mirror == nil || next == nil || minter == nil {
		return nil, errors.New("shim: mirror, next handler and minter are required")
	}
	if opts.Namespace == nil || opts.Forward == nil {
		return nil, errors.New("shim: Namespace and Forward are required")
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	s := &Shim{mirror: mirror, next: next, minter: minter, opts: opts, ln: newChanListener()}
	s.inner = &http.Server{
		Handler: logx.AccessLogWith(opts.Logger, func(r *http.Request) logrus.Fields {
			return logrus.Fields{"connect": targetOf(r.Context())}
		}, http.HandlerFunc(s.serveIntercepted)),
		ReadHeaderTimeout: opts.HeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          log.New(opts.Logger.WriterLevel(logrus.DebugLevel), "intercept: ", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if v, ok := s.conns.Load(c); ok {
				ic := v.(*interceptedConn)
				ctx = context.WithValue(ctx, ctxKey{}, ic.target)
				if ic.user != "" {
					ctx = auth.WithClient(ctx, auth.Client{User: ic.user})
				}
				return ctx
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st != http.StateClosed && st != http.StateHijacked {
				return
			}
			if ic, ok := s.conns.LoadAndDelete(c); ok {
				ic := ic.(*interceptedConn)
				ic.once.Do(func() { close(ic.done) })
			}
		},
	}
	go func() { _ = s.inner.Serve(s.ln) }()
	return s, nil
}

func targetOf(ctx context.Context) string {
	t, _ := ctx.Value(ctxKey{}).(string)
	return t
}

// Close stops the inner server and every tunnel at once.
func (s *Shim) Close() error {
	s.closing.Store(true)
	err := s.inner.Close()
	s.closeTunnels()
	s.active.Wait()
	return err
}

// Shutdown stops the inner server gracefully (idle intercepted
// connections close, requests in flight finish) and waits for tunnels to
// end until ctx is done, then closes what is left.
func (s *Shim) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	err := s.inner.Shutdown(ctx)
	if err != nil {
		_ = s.inner.Close()
	}
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.closeTunnels()
		<-done
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

func (s *Shim) closeTunnels() {
	s.tunnels.Range(func(k, _ any) bool {
		_ = k.(net.Conn).Close()
		return true
	})
}

// ServeHTTP implements http.Handler.
func (s *Shim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		s.handleConnect(w, r)
	case r.URL.IsAbs():
		s.handleAbsolute(w, r)
	default:
		s.next.ServeHTTP(w, r)
	}
}

func plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// proxyUser checks Proxy-Authorization; ok is false when the request must
// be answered 407.
func (s *Shim) proxyUser(w http.ResponseWriter, r *http.Request) (user string, ok bool) {
	h := r.Header.Get("Proxy-Authorization")
	if h == "" || s.opts.ProxyAuth == nil {
		if s.opts.RequireProxyAuth {
			w.Header().Set("Proxy-Authenticate", auth.ProxyChallenge)
			plainError(w, http.StatusProxyAuthRequired, "proxy authentication required")
			return "", false
		}
		return "", true
	}
	user, valid := s.opts.ProxyAuth(h)
	if !valid {
		logx.InfoFrom(r.Context()).Set("decision", "proxy-auth-failed")
		w.Header().Set("Proxy-Authenticate", auth.ProxyChallenge)
		plainError(w, http.StatusProxyAuthRequired, "proxy authentication failed")
		return "", false
	}
	logx.InfoFrom(r.Context()).Set("client", "user:"+user)
	return user, true
}

func (s *Shim) handleConnect(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	info := logx.InfoFrom(r.Context())
	info.Set("connect", target)
	user, ok := s.proxyUser(w, r)
	if !ok {
		s.opts.Observer.Connect("proxy-auth-failed")
		return
	}
	dec, reason, err := Decide(target, s.opts.Policy)
	if err != nil {
		s.opts.Observer.Connect("bad-request")
		info.Set("decision", "bad-request")
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	info.Set("decision", dec.String())
	s.opts.Observer.Connect(dec.String())
	if dec == Deny {
		info.Set("reason", reason)
		plainError(w, http.StatusForbidden, "CONNECT "+target+" refused: "+reason)
		return
	}
	var upstream net.Conn
	if dec == Tunnel {
		upstream, err = dialTunnel(r.Context(), target, s.opts.Tunnel)
		if err != nil {
			status := http.StatusBadGateway
			if errors.Is(err, ErrForbiddenAddress) {
				status = http.StatusForbidden
			}
			info.Set("error", err.Error())
			plainError(w, status, "CONNECT "+target+": "+err.Error())
			return
		}
	}
	if s.closing.Load() {
		if upstream != nil {
			upstream.Close()
		}
		plainError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	s.active.Add(1)
	defer s.active.Done()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		if upstream != nil {
			upstream.Close()
		}
		plainError(w, http.StatusInternalServerError, "cannot take over the connection")
		return
	}
	client := &bufConn{Conn: conn, r: rw.Reader}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		if upstream != nil {
			upstream.Close()
		}
		return
	}
	if dec == Tunnel {
		s.tunnels.Store(client.Conn, struct{}{})
		s.tunnels.Store(upstream, struct{}{})
		s.opts.Observer.TunnelOpened()
		up, down := splice(client, upstream, s.opts.Tunnel)
		s.opts.Observer.TunnelClosed()
		s.tunnels.Delete(client.Conn)
		s.tunnels.Delete(upstream)
		info.Set("bytes_up", up)
		info.Set("bytes_down", down)
		return
	}
	s.intercept(client, target, user, info)
}

// intercept terminates TLS on client with a certificate for target and
// hands the connection to the inner server; it returns when the inner
// server is done with it.
func (s *Shim) intercept(client *bufConn, target, user string, info *logx.Info) {
	host, _, _ := net.SplitHostPort(target)
	counted := &countConn{Conn: client}
	tc := tls.Server(&SendTimeoutConn{Conn: counted, Timeout: s.opts.SendTimeout}, s.minter.TLSConfig(host))
	ic := &interceptedConn{target: CanonicalTarget(target), user: user, done: make(chan struct{})}
	s.conns.Store(tc, ic)
	if s.closing.Load() || !s.ln.push(tc) {
		s.conns.Delete(tc)
		tc.Close()
		return
	}
	<-ic.done
	info.Set("bytes_up", counted.read.Load())
	info.Set("bytes_down", counted.written.Load())
}

// bufConn reads first what the HTTP server had already buffered.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying TCP connection.
func (c *bufConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// countConn counts the bytes of an intercepted connection.
type countConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// chanListener is a net.Listener fed with connections by the shim.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return shimAddr{} }

type shimAddr struct{}

func (shimAddr) Network() string { return "shim" }
func (shimAddr) String() string  { return "intercepted" }
