package main

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSpliceClient GETs blobs with Content-Length (reusing the
// connection), chunked, through a redirect, and after the server closed
// an idle connection; and checks that errors are errors.
func TestSpliceClient(t *testing.T) {
	t.Parallel()
	body := make([]byte, 3<<20+123)
	rand.Read(body)
	b := blob{digest: "sha256:x", size: int64(len(body))}
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/cl/"):
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		case strings.HasPrefix(r.URL.Path, "/v2/chunked/"):
			w.Write(body[:100])
			w.(http.Flusher).Flush()
			w.Write(body[100:])
		case strings.HasPrefix(r.URL.Path, "/v2/redirect/"):
			http.Redirect(w, r, "/v2/cl/blobs/"+b.digest, http.StatusTemporaryRedirect)
		case strings.HasPrefix(r.URL.Path, "/v2/short/"):
			w.Header().Set("Content-Length", strconv.Itoa(len(body)-1))
			w.Write(body[1:])
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	ctx := context.Background()
	sc := newSpliceClient(srv.Client())
	defer sc.closeIdle()
	for _, name := range []string{"cl", "cl", "chunked", "redirect", "cl"} {
		n, err := sc.getBlob(ctx, srv.URL, name, b)
		if err != nil || n != b.size {
			t.Fatalf("%s: %d bytes, %v", name, n, err)
		}
	}
	// cl, cl (reused), chunked (reused, then closed), redirect + cl (one
	// new connection), cl (reused).
	if conns.Load() != 2 {
		t.Errorf("%d connections, want 2", conns.Load())
	}
	srv.CloseClientConnections()
	if n, err := sc.getBlob(ctx, srv.URL, "cl", b); err != nil || n != b.size {
		t.Fatalf("after the server closed the idle connection: %d bytes, %v", n, err)
	}
	if _, err := sc.getBlob(ctx, srv.URL, "short", b); err == nil {
		t.Error("short body: no error")
	}
	if _, err := sc.getBlob(ctx, srv.URL, "missing", b); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}
