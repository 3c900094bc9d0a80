package testreg

import (
	"io"
	"net"
	"net/http"
)

// More body faults (issue 14, faults pinned against the binary; a stall
// mid-body is FaultStallMidBlob in faults.go). Their values stay clear of
// the ones in faults.go.
const (
	// FaultResetMidBlob sends blob GET headers with the full
	// Content-Length and half the body, then resets the connection
	// (HTTP/1.1: a TCP RST, SO_LINGER 0, which may also drop the last
	// bytes sent; HTTP/2: a stream reset).
	FaultResetMidBlob Fault = -101
	// FaultShortChunked sends blob GET bodies without Content-Length
	// (chunked) and ends them cleanly after half the bytes: a complete
	// HTTP answer with a short body, which only the size or digest check
	// notices.
	FaultShortChunked Fault = -102
	// FaultLongChunked sends blob GET bodies without Content-Length and
	// ends them cleanly after the whole blob and 1 KiB more.
	FaultLongChunked Fault = -103
)

// loadFaultName names these faults for Fault.String.
func loadFaultName(f Fault) (string, bool) {
	switch f {
	case FaultResetMidBlob:
		return "reset-mid-blob", true
	case FaultShortChunked:
		return "short-chunked", true
	case FaultLongChunked:
		return "long-chunked", true
	}
	return "", false
}

// dropsLength reports whether the fault sends blob bodies without
// Content-Length.
func (f Fault) dropsLength() bool {
	return f == FaultNoLength || f == FaultShortChunked || f == FaultLongChunked
}

// applyLoadFault sends a successful blob body (headers already written)
// the way one of these faults says, and reports whether it did (false:
// not one of these faults).
func (r *Registry) applyLoadFault(w http.ResponseWriter, req *http.Request, resp *http.Response, f Fault) bool {
	rc := http.NewResponseController(w)
	total := resp.ContentLength
	half := max(total/2, 1)
	switch f {
	case FaultResetMidBlob:
		_, _ = io.CopyN(w, resp.Body, half)
		_ = rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(http.ErrAbortHandler) // HTTP/2: reset the stream
		}
		if tc, ok := underlyingTCP(conn); ok {
			// Closed under TLS (no close_notify) with SO_LINGER 0: an
			// RST, not a FIN; bytes still in the send buffer are lost,
			// as in a real reset.
			_ = tc.SetLinger(0)
			_ = tc.Close()
			return true
		}
		_ = conn.Close()
	case FaultShortChunked:
		_, _ = io.CopyN(w, resp.Body, half)
	case FaultLongChunked:
		r.copyBlob(w, req, resp.Body)
		_, _ = w.Write(make([]byte, 1024))
	default:
		return false
	}
	return true
}

// underlyingTCP finds the TCP connection under a hijacked one (plain, or
// TLS).
func underlyingTCP(c net.Conn) (*net.TCPConn, bool) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil, false
		}
	}
}
