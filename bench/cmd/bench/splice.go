package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// spliceClient GETs blobs over plain HTTP/1.1 on raw TCP connections and
// moves their bodies to /dev/null with splice(2): io.Copy to an *os.File
// from an io.LimitedReader around a *net.TCPConn is os.File.ReadFrom,
// which splices socket → pipe → /dev/null on Linux, so the body never
// enters user space and the clients cost next to no CPU. Real clients sit
// on other machines; on a 2-CPU loopback bench, clients that copy every
// body to user space take the CPUs away from the servers under test.
//
// It does not check digests: clients that verify use getBlob (net/http,
// copying and hashing). Chunked or length-less bodies, and redirects off
// plain HTTP, fall back to copying.
type spliceClient struct {
	c  *http.Client // for fallbacks (redirects to https)
	mu sync.Mutex
	// idle keep-alive connections by host:port, each used by one request
	// at a time.
	idle map[string][]*rawConn
}

// rawConn is one keep-alive connection; br is empty between requests.
type rawConn struct {
	c    *net.TCPConn
	br   *bufio.Reader
	null *os.File // /dev/null, the splice target (one per connection: a pump holds the file's write lock)
}

func newSpliceClient(c *http.Client) *spliceClient {
	return &spliceClient{c: c, idle: map[string][]*rawConn{}}
}

func (rc *rawConn) close() {
	rc.c.Close()
	rc.null.Close()
}

// conn returns an idle connection to host, or a new one; reused says which.
func (s *spliceClient) conn(ctx context.Context, host string, fresh bool) (rc *rawConn, reused bool, err error) {
	if !fresh {
		s.mu.Lock()
		if l := s.idle[host]; len(l) > 0 {
			rc = l[len(l)-1]
			s.idle[host] = l[:len(l)-1]
		}
		s.mu.Unlock()
		if rc != nil {
			return rc, true, nil
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		c.Close()
		return nil, false, err
	}
	// A small buffer: only the header and what arrives with it pass
	// through user space.
	return &rawConn{c: c.(*net.TCPConn), br: bufio.NewReaderSize(c, 4096), null: null}, false, nil
}

func (s *spliceClient) put(host string, rc *rawConn) {
	s.mu.Lock()
	s.idle[host] = append(s.idle[host], rc)
	s.mu.Unlock()
}

// closeIdle closes the idle connections.
func (s *spliceClient) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, l := range s.idle {
		for _, rc := range l {
			rc.close()
		}
		delete(s.idle, h)
	}
}

// getBlob GETs blob b and checks the body's length; it returns the body
// bytes received, like getBlob (without the digest check).
func (s *spliceClient) getBlob(ctx context.Context, base, name string, b blob) (int64, error) {
	u := base + "/v2/" + name + "/blobs/" + b.digest
	n, err := s.get(ctx, u, b, 1)
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", u, err)
	}
	if n != b.size {
		return n, fmt.Errorf("GET %s: body has %d bytes, want %d", u, n, b.size)
	}
	return n, nil
}

// errStale is a reused connection the server had closed before it
// answered: the request is retried on a new one.
var errStale = errors.New("stale keep-alive connection")

// get GETs u and discards the body, following at most redirects
// redirects.
func (s *spliceClient) get(ctx context.Context, raw string, b blob, redirects int) (int64, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, err
	}
	if u.Scheme != "http" {
		// TLS cannot be spliced.
		return getBlobURL(ctx, s.c, raw, b, false)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	for attempt := 0; ; attempt++ {
		rc, reused, err := s.conn(ctx, host, attempt > 0)
		if err != nil {
			return 0, err
		}
		n, loc, keep, err := s.roundTrip(ctx, rc, u)
		if keep && err == nil {
			s.put(host, rc)
		} else {
			rc.close()
		}
		if errors.Is(err, errStale) && reused && attempt == 0 {
			continue
		}
		if err != nil || loc == "" {
			return n, err
		}
		if redirects == 0 {
			return 0, fmt.Errorf("too many redirects (to %s)", loc)
		}
		next, err := u.Parse(loc)
		if err != nil {
			return 0, fmt.Errorf("redirect to %q: %w", loc, err)
		}
		return s.get(ctx, next.String(), b, redirects-1)
	}
}

// aLongTimeAgo is a deadline in the past: it unblocks a connection's I/O.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes the GET, reads the response header and moves the body
// to /dev/null. It returns the body bytes, the Location of a redirect
// (then n is 0), and whether the connection can be reused.
func (s *spliceClient) roundTrip(ctx context.Context, rc *rawConn, u *url.URL) (n int64, loc string, keep bool, err error) {
	stop := context.AfterFunc(ctx, func() { rc.c.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() {
			// The deadline fired (or is about to): the connection is done for.
			keep = false
			if err == nil {
				err = ctx.Err()
			}
		}
	}()
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: crp-bench-splice\r\n\r\n"
	if _, err := io.WriteString(rc.c, req); err != nil {
		return 0, "", false, fmt.Errorf("%w: %w", errStale, err)
	}
	code, h, keep, err := rc.readHead()
	if err != nil {
		return 0, "", false, err
	}
	size, err := bodySize(h)
	if err != nil {
		return 0, "", false, err
	}
	switch code {
	case http.StatusOK:
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		loc, keep, err = rc.redirect(code, h, size, keep)
		return 0, loc, keep, err
	default:
		msg, _ := io.ReadAll(io.LimitReader(rc.br, min(max(size, 0), 64<<10)))
		return 0, "", false, fmt.Errorf("status %d: %s", code, msg)
	}
	if size < 0 {
		n, err = rc.copyBody(h)
		return n, "", false, err
	}
	n, err = rc.spliceBody(size)
	return n, "", keep && err == nil, err
}

// readHead reads the status line and the header of a response, and says
// whether the connection stays open after it.
func (rc *rawConn) readHead() (code int, h textproto.MIMEHeader, keep bool, err error) {
	tp := textproto.NewReader(rc.br)
	line, err := tp.ReadLine()
	if err != nil {
		if line == "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)) {
			err = fmt.Errorf("%w: %w", errStale, err)
		}
		return 0, nil, false, err
	}
	proto, status, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(status) < 3 {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	code, err = strconv.Atoi(status[:3])
	if err != nil {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	h, err = tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading the header: %w", err)
	}
	keep = proto == "HTTP/1.1" && !headerHas(h, "Connection", "close") ||
		proto == "HTTP/1.0" && headerHas(h, "Connection", "keep-alive")
	return code, h, keep, nil
}

// bodySize is the body's Content-Length, or -1 when it is chunked or has
// none.
func bodySize(h textproto.MIMEHeader) (int64, error) {
	if te := h.Get("Transfer-Encoding"); te != "" && !strings.EqualFold(te, "identity") {
		if !strings.EqualFold(te, "chunked") {
			return 0, fmt.Errorf("unsupported Transfer-Encoding %q", te)
		}
		return -1, nil
	}
	cl := h.Get("Content-Length")
	if cl == "" {
		return -1, nil
	}
	size, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
	if err != nil || size < 0 {
		return 0, fmt.Errorf("malformed Content-Length %q", cl)
	}
	return size, nil
}

// redirect returns a redirect's Location, and whether the connection can
// be reused: it drains a short body to keep it, else drops it.
func (rc *rawConn) redirect(code int, h textproto.MIMEHeader, size int64, keep bool) (loc string, reuse bool, err error) {
	loc = h.Get("Location")
	if loc == "" {
		return "", false, fmt.Errorf("status %d without Location", code)
	}
	if size >= 0 && size <= 64<<10 {
		if _, err := rc.br.Discard(int(size)); err != nil {
			return loc, false, nil
		}
		return loc, keep, nil
	}
	return loc, false, nil
}

// copyBody reads a chunked body, or one delimited by the end of the
// connection, into user space, as net/http would; the connection cannot
// be reused after it.
func (rc *rawConn) copyBody(h textproto.MIMEHeader) (int64, error) {
	var r io.Reader = rc.br
	if h.Get("Transfer-Encoding") != "" {
		r = httputil.NewChunkedReader(rc.br)
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	n, err := io.CopyBuffer(io.Discard, onlyReader{r}, *bufp)
	if err != nil {
		return n, fmt.Errorf("body cut after %d bytes: %w", n, err)
	}
	return n, nil
}

// spliceBody moves a body of size bytes to /dev/null: what bufio read
// past the header by hand, the rest socket → pipe → /dev/null (splice(2)).
func (rc *rawConn) spliceBody(size int64) (int64, error) {
	head := min(int64(rc.br.Buffered()), size)
	if _, err := rc.br.Discard(int(head)); err != nil {
		return 0, err
	}
	if rc.br.Buffered() > 0 {
		return head, fmt.Errorf("%d bytes after a body of %d", rc.br.Buffered(), size)
	}
	m, err := io.Copy(rc.null, io.LimitReader(rc.c, size-head))
	n := head + m
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("body cut after %d of %d bytes: %w", n, size, err)
	}
	return n, nil
}

// headerHas says whether the comma-separated header key lists token.
func headerHas(h textproto.MIMEHeader, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
