package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/sirupsen/logrus"
)

// Shim is the HTTPS_PROXY front door: an http.Handler for CONNECT and
// absolute-form requests (Handles). The server in front of it sends every
// other request elsewhere; one that reaches the shim anyway is answered
// with an OCI error.
type Shim struct {
	mirror http.Handler
	minter *Minter
	opts   Options
	// routes holds every intercepted host (canonical) and where its
	// requests go; policy decides CONNECTs with it. Both are read-only
	// after New.
	routes map[string]*hostRoute
	policy Policy
	// addrs finds the intercepted hosts of an address (Policy.ByAddress).
	addrs *addrIndex

	inner *http.Server
	ln    *chanListener
	conns sync.Map // *tls.Conn → *interceptedConn

	// mu guards closing and every s.active.Add, so that no CONNECT
	// handler is added while Close or Shutdown waits on active.
	mu      sync.Mutex
	closing bool
	// active counts CONNECT handlers that took their connection over;
	// tunnels holds their connections so that a shutdown past its
	// deadline can close them.
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
// mirror and mints certificates with minter. It validates opts (errors
// wrap ErrInvalidOptions), builds a verified pass-through transport per
// intercepted host and starts the inner server that serves terminated
// connections; Close or Shutdown stops them.
func New(mirror http.Handler, minter *Minter, opts Options) (*Shim, error) {
	if mirror == nil || minter == nil {
		return nil, fmt.Errorf("%w: the mirror handler and the minter are required", ErrInvalidOptions)
	}
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	routes, err := buildRoutes(opts.Registries, opts.DockerHub)
	if err != nil {
		return nil, err
	}
	opts = withDefaults(opts)
	s := &Shim{mirror: mirror, minter: minter, opts: opts, routes: routes, addrs: newAddrIndex(routes), ln: newChanListener()}
	s.policy = Policy{Intercepted: s.intercepted, ByAddress: s.addrs.registries, AllowPorts: opts.Tunnel.AllowPorts, AllowNetworks: opts.Tunnel.AllowNetworks}
	s.inner = s.newInnerServer()
	go s.serveInner()
	return s, nil
}

// newInnerServer returns the server of the terminated connections: each
// request's context carries the CONNECT target and the proxy user.
func (s *Shim) newInnerServer() *http.Server {
	return &http.Server{
		Handler: logx.AccessLogWith(s.opts.Logger, func(r *http.Request) logrus.Fields {
			return logrus.Fields{"connect": targetOf(r.Context())}
		}, http.HandlerFunc(s.serveIntercepted)),
		ReadHeaderTimeout: s.opts.HeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          logx.ServerLog(s.opts.Logger, "intercept: "),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			v, ok := s.conns.Load(c)
			if !ok {
				return ctx
			}
			ic := v.(*interceptedConn)
			ctx = context.WithValue(ctx, ctxKey{}, ic.target)
			if ic.user != "" {
				ctx = auth.WithClient(ctx, auth.Client{User: ic.user})
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st != http.StateClosed && st != http.StateHijacked {
				return
			}
			if v, ok := s.conns.LoadAndDelete(c); ok {
				ic := v.(*interceptedConn)
				ic.once.Do(func() { close(ic.done) })
			}
		},
	}
}

// serveInner runs the inner server until Close or Shutdown.
func (s *Shim) serveInner() {
	if err := s.inner.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.opts.Logger.WithError(err).Error("the server of intercepted connections stopped")
	}
}

// intercepted reports whether the shim terminates CONNECTs to host (a
// canonical host).
func (s *Shim) intercepted(host string) bool { return s.routes[host] != nil }

func targetOf(ctx context.Context) string {
	t, _ := ctx.Value(ctxKey{}).(string)
	return t
}

// enter counts one more CONNECT handler unless the shim is closing; the
// caller calls s.active.Done when enter returned true. The check and the
// Add are one step under mu, so no Add runs concurrently with the Wait of
// Close or Shutdown (which sync.WaitGroup forbids).
func (s *Shim) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.active.Add(1)
	return true
}

// beginClose refuses every CONNECT from now on.
func (s *Shim) beginClose() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// Close stops the inner server and every tunnel at once.
func (s *Shim) Close() error {
	s.beginClose()
	err := s.inner.Close()
	s.closeTunnels()
	s.active.Wait()
	s.closeIdleRoutes()
	return err
}

// Shutdown stops the inner server gracefully (idle intercepted
// connections close, requests in flight finish) and waits for tunnels to
// end until ctx is done, then closes what is left. CONNECTs that arrive
// meanwhile are answered 503.
func (s *Shim) Shutdown(ctx context.Context) error {
	s.beginClose()
	err := s.inner.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.inner.Close())
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
	s.closeIdleRoutes()
	return err
}

func (s *Shim) closeTunnels() {
	s.tunnels.Range(func(k, _ any) bool {
		_ = k.(net.Conn).Close()
		return true
	})
}

// Handles reports whether r is a request for the shim: CONNECT, or an
// absolute-form request (an HTTP_PROXY client's "GET http://host/…").
// The front handler sends these to the shim and everything else to its
// own routes.
func Handles(r *http.Request) bool {
	return r.Method == http.MethodConnect || r.URL.IsAbs()
}

// ServeHTTP implements http.Handler for the requests Handles accepts.
func (s *Shim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		s.handleConnect(w, r)
	case r.URL.IsAbs():
		s.handleAbsolute(w, r)
	default:
		s.fail(w, r, oci.Errorf(http.StatusBadRequest, oci.CodeUnsupported, "the proxy's front door takes CONNECT and absolute-form requests only"))
	}
}

// fail logs err and answers it as an OCI error envelope.
func (s *Shim) fail(w http.ResponseWriter, r *http.Request, err error) {
	logx.From(r.Context()).WithError(err).WithField(logx.FieldStatus, oci.StatusOf(err)).Info("shim request failed")
	oci.WriteError(w, r, err)
}

// plainError answers a proxy-level failure (407, 403, 502 to a CONNECT)
// with one line of text and closes the connection.
func plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg) //nolint:gosec // G705: plain text with nosniff; a browser renders no markup from it
}

// proxyUser checks Proxy-Authorization; ok is false when the request was
// answered 407.
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
	user, valid := s.opts.ProxyAuth.ProxyUser(h)
	if !valid {
		logx.InfoFrom(r.Context()).Set("decision", "proxy-auth-failed")
		w.Header().Set("Proxy-Authenticate", auth.ProxyChallenge)
		plainError(w, http.StatusProxyAuthRequired, "proxy authentication failed")
		return "", false
	}
	logx.InfoFrom(r.Context()).Set("client", "user:"+user)
	return user, true
}
