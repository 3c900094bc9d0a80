package shim

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// handleConnect answers one CONNECT: proxy authentication, the decision,
// then the denial, the tunnel or the interception.
func (s *Shim) handleConnect(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	info := logx.InfoFrom(r.Context())
	info.Set("connect", target)
	user, ok := s.proxyUser(w, r)
	if !ok {
		s.opts.Observer.Connect("proxy-auth-failed")
		return
	}
	v, err := Decide(target, s.policy)
	if err != nil {
		s.opts.Observer.Connect("bad-request")
		info.Set("decision", "bad-request")
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	info.Set("decision", v.Decision.String())
	if v.Decision == Intercept && v.Registry != v.Target.canonical() {
		info.Set("registry", v.Registry)
	}
	s.opts.Observer.Connect(v.Decision.String())
	s.carryOut(w, r, v, user)
}

// carryOut acts on a verdict. Only Tunnel and Intercept open anything:
// Deny, and any value this switch does not know, is answered 403.
func (s *Shim) carryOut(w http.ResponseWriter, r *http.Request, v Verdict, user string) {
	switch v.Decision {
	case Tunnel:
		s.tunnel(w, r, v.Target.String())
	case Intercept:
		client, ok := s.takeOver(w, nil)
		if !ok {
			return
		}
		defer s.active.Done()
		s.intercept(client, v, user, logx.InfoFrom(r.Context()))
	default:
		reason := v.Reason
		if reason == "" {
			reason = "no decision to open it"
		}
		logx.InfoFrom(r.Context()).Set("reason", reason)
		plainError(w, http.StatusForbidden, "CONNECT "+r.Host+" refused: "+reason)
	}
}

// tunnel dials target, takes the client's connection over and splices the
// two until both directions are done.
func (s *Shim) tunnel(w http.ResponseWriter, r *http.Request, target string) {
	info := logx.InfoFrom(r.Context())
	upstream, err := dialTunnel(r.Context(), target, s.opts.Tunnel)
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, ErrForbiddenAddress) {
			status = http.StatusForbidden
		}
		info.Set("error", err.Error())
		plainError(w, status, "CONNECT "+target+": "+err.Error())
		return
	}
	client, ok := s.takeOver(w, upstream)
	if !ok {
		return
	}
	defer s.active.Done()
	s.tunnels.Store(client.Conn, struct{}{})
	s.tunnels.Store(upstream, struct{}{})
	s.opts.Observer.TunnelOpened()
	up, down := splice(client, upstream, s.opts.Tunnel)
	s.opts.Observer.TunnelClosed()
	s.tunnels.Delete(client.Conn)
	s.tunnels.Delete(upstream)
	info.Set("bytes_up", up)
	info.Set("bytes_down", down)
}

// takeOver counts the handler in (enter), hijacks the client's connection
// and answers 200. When it returns ok the caller owns the connection and
// must call s.active.Done; otherwise the client was answered (503 while
// the shim is closing) or dropped, and upstream (nil for interceptions) is
// closed.
func (s *Shim) takeOver(w http.ResponseWriter, upstream net.Conn) (*bufConn, bool) {
	if !s.enter() {
		closeConn(upstream)
		plainError(w, http.StatusServiceUnavailable, "shutting down")
		return nil, false
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.active.Done()
		closeConn(upstream)
		plainError(w, http.StatusInternalServerError, "cannot take over the connection")
		return nil, false
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		s.active.Done()
		closeConn(conn)
		closeConn(upstream)
		return nil, false
	}
	return &bufConn{Conn: conn, r: rw.Reader}, true
}

// closeConn closes c unless it is nil.
func closeConn(c net.Conn) {
	if c != nil {
		_ = c.Close()
	}
}

// intercept terminates TLS on client with a certificate for the
// verdict's target and hands the connection to the inner server as a
// connection to the verdict's registry; it returns when the inner server
// is done with it.
func (s *Shim) intercept(client *bufConn, v Verdict, user string, info *logx.Info) {
	counted := &countConn{Conn: client}
	var tc net.Conn = tls.Server(&SendTimeoutConn{Conn: counted, Timeout: s.opts.SendTimeout}, s.tlsConfig(v))
	ic := &interceptedConn{target: v.Registry, user: user, done: make(chan struct{})}
	s.conns.Store(tc, ic)
	if !s.ln.push(tc) { // the inner server is shut down
		s.conns.Delete(tc)
		_ = tc.Close()
		return
	}
	<-ic.done
	info.Set("bytes_up", counted.read.Load())
	info.Set("bytes_down", counted.written.Load())
}

// ErrServerNameMismatch is the cause of a refused handshake whose SNI
// names neither the CONNECT target nor the registry it is intercepted as.
var ErrServerNameMismatch = errors.New("TLS server name does not match the CONNECT target")

// tlsConfig is the server configuration of one interception: the leaf
// for the client's SNI when it names the CONNECT target's host or the
// intercepted registry (Docker Hub's names are one registry), for the
// target's host when the client sent none; any other SNI gets no
// certificate, so leaves are minted for intercepted hosts only.
func (s *Shim) tlsConfig(v Verdict) *tls.Config {
	cfg := s.minter.TLSConfig(v.Target.Host)
	mint := cfg.GetCertificate
	registry := v.Registry
	if reg, err := ParseTarget(v.Registry, 443); err == nil {
		registry = CanonicalTarget(reg.Host)
	}
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if sni := hello.ServerName; sni != "" {
			name, err := ParseTarget(sni, 443)
			if err != nil || (name.Host != v.Target.Host && CanonicalTarget(name.Host) != registry) {
				return nil, fmt.Errorf("%w: %q inside CONNECT %s", ErrServerNameMismatch, sni, v.Target)
			}
		}
		return mint(hello)
	}
	return cfg
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
	return c.Close()
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

// push hands c to Accept; it is false once the listener is closed.
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
