package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// TunnelOptions bound the tunnels to hosts the shim does not intercept
// (and the plain-HTTP requests forwarded in absolute form).
type TunnelOptions struct {
	// ConnectTimeout bounds the dial; ReadTimeout and SendTimeout bound
	// the silence between two reads and two writes. Zero means none.
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	SendTimeout    time.Duration
	// AllowPorts are the ports tunnels may reach (443 only when empty).
	AllowPorts []int
	// AllowNetworks are prefixes tunnels may reach although they are
	// denied by default (loopback, link-local; see Allowed).
	AllowNetworks []netip.Prefix
}

// ErrForbiddenAddress reports a tunnel target that resolved to an address
// tunnels may not reach (DNS pointing at loopback or a metadata service).
var ErrForbiddenAddress = errors.New("address not allowed for tunnels")

// dialTunnel connects to target, refusing resolved addresses that Allowed
// rejects, so a name cannot smuggle a tunnel to a local service.
func dialTunnel(ctx context.Context, target string, opts TunnelOptions) (net.Conn, error) {
	d := net.Dialer{
		Timeout: opts.ConnectTimeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			if !Allowed(ap.Addr(), opts.AllowNetworks) {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
			}
			return nil
		},
	}
	return d.DialContext(ctx, "tcp", target)
}

// idleConn gives each Read and Write its own deadline: a timeout bounds the
// silence between two reads (or writes), as nginx's proxy_*_timeout do.
type idleConn struct {
	net.Conn
	read, write time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	if c.read > 0 {
		if err := c.SetReadDeadline(time.Now().Add(c.read)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	if c.write > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

// closeWriter is a connection that can half-close (TCP, TLS).
type closeWriter interface{ CloseWrite() error }

// splice copies bytes both ways until both directions ended, half-closing
// each side's write direction when the other side's reads end. It returns
// the bytes sent client→target (up) and target→client (down).
func splice(client, target net.Conn, opts TunnelOptions) (up, down int64) {
	var wg sync.WaitGroup
	var upN, downN atomic.Int64
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		c, err := io.Copy(idleConn{Conn: dst, write: opts.SendTimeout}, idleConn{Conn: src, read: opts.ReadTimeout})
		n.Add(c)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			if err := cw.CloseWrite(); err == nil {
				return
			}
		}
		// An error (timeout, reset, a failed half-close) ends the
		// tunnel both ways.
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Add(2)
	go pipe(target, client, &upN)
	go pipe(client, target, &downN)
	wg.Wait()
	_ = client.Close()
	_ = target.Close()
	return upN.Load(), downN.Load()
}
