package shim

import (
	"io"
	"net"
	"sync/atomic"
	"time"
)

// sendChunk is how many bytes one write deadline covers when a file is
// copied to a connection with sendfile.
const sendChunk = 4 << 20

// SendTimeoutListener wraps ln so that every accepted connection bounds
// the silence between two writes to the client by d (nginx's
// send_timeout): a client that stops reading is dropped instead of
// holding a goroutine and a file forever.
func SendTimeoutListener(ln net.Listener, d time.Duration) net.Listener {
	if d <= 0 {
		return ln
	}
	return &sendTimeoutListener{Listener: ln, d: d}
}

type sendTimeoutListener struct {
	net.Listener
	d time.Duration
}

func (l *sendTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &SendTimeoutConn{Conn: c, Timeout: l.d}, nil
}

// SendTimeoutConn keeps a write deadline of about now+Timeout: a client
// that reads nothing for Timeout is dropped. The deadline is moved at most
// every Timeout/8 (a TLS stream writes one record per call, and setting a
// deadline on each cost a few percent of CPU in the shim benchmark), so
// the silence allowed is between 7/8 of Timeout and Timeout. It keeps
// io.ReaderFrom, in chunks with a fresh deadline each, so that files still
// go out with sendfile. Writes are not concurrent (net/http and TLS
// serialise them).
type SendTimeoutConn struct {
	net.Conn
	Timeout time.Duration
	last    atomic.Int64 // unix nanoseconds of the last deadline set
}

// Write implements net.Conn.
func (c *SendTimeoutConn) Write(p []byte) (int, error) {
	if c.Timeout > 0 {
		if now := time.Now(); now.UnixNano()-c.last.Load() >= int64(c.Timeout/8) {
			if err := c.SetWriteDeadline(now.Add(c.Timeout)); err != nil {
				return 0, err
			}
			c.last.Store(now.UnixNano())
		}
	}
	return c.Conn.Write(p)
}

// ReadFrom copies src to the connection, letting the kernel copy files.
func (c *SendTimeoutConn) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok || c.Timeout <= 0 {
		return io.Copy(writerOnly{c}, src)
	}
	// Keep a single level of *io.LimitedReader around an *os.File: the
	// shape the kernel's sendfile path recognises.
	lr, isLimited := src.(*io.LimitedReader)
	var total int64
	for {
		var chunk io.Reader
		if isLimited {
			if lr.N <= 0 {
				return total, nil
			}
			chunk = &io.LimitedReader{R: lr.R, N: min(lr.N, sendChunk)}
		} else {
			chunk = io.LimitReader(src, sendChunk)
		}
		now := time.Now()
		c.last.Store(now.UnixNano())
		if err := c.SetWriteDeadline(now.Add(c.Timeout)); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(chunk)
		total += n
		if isLimited {
			lr.N -= n
		}
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// CloseWrite half-closes when the underlying connection can.
func (c *SendTimeoutConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

type writerOnly struct{ io.Writer }
