package logx_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/sirupsen/logrus"
)

// line is one log line as written: its fields and its formatted text.
type line struct {
	msg    string
	fields logrus.Fields
	text   string
}

// lineHook hands every line logged to the test, so that the test waits
// for the access line instead of guessing when the server wrote it.
type lineHook struct{ ch chan line }

func (h lineHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h lineHook) Fire(e *logrus.Entry) error {
	f := logrus.Fields{}
	for k, v := range e.Data {
		f[k] = v
	}
	text, err := e.String()
	if err != nil {
		return err
	}
	h.ch <- line{msg: e.Message, fields: f, text: text}
	return nil
}

// newLogger returns a logger whose lines arrive on the returned channel.
func newLogger() (*logrus.Logger, <-chan line) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetFormatter(&logrus.TextFormatter{DisableColors: true, DisableTimestamp: true})
	l.SetLevel(logrus.DebugLevel)
	ch := make(chan line, 64)
	l.AddHook(lineHook{ch})
	return l, ch
}

// next waits for the next line logged.
func next(t *testing.T, ch <-chan line) line {
	t.Helper()
	select {
	case l := <-ch:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no log line within 10s")
		return line{}
	}
}

// accessLine waits for the access line, collecting the lines logged
// before it.
func accessLine(t *testing.T, ch <-chan line) (access line, before []line) {
	t.Helper()
	for {
		l := next(t, ch)
		if l.msg == "request" {
			return l, before
		}
		before = append(before, l)
	}
}

// get sends a request to srv and returns the response with its body read.
func get(t *testing.T, srv *httptest.Server, method, uri string) (*http.Response, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// TestAccessLine serves real requests and checks the one line each gets.
func TestAccessLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		method  string
		uri     string
		fields  func(*http.Request) logrus.Fields
		handler http.HandlerFunc
		want    logrus.Fields
		absent  []string
	}{
		{
			name: "status, bytes and the request", method: http.MethodGet, uri: "/v2/library/alpine/manifests/3.20?ns=docker.io",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, "not here")
			},
			want:   logrus.Fields{"method": "GET", "path": "/v2/library/alpine/manifests/3.20?ns=docker.io", "status": 404, "bytes": int64(8)},
			absent: []string{"upstream", "repo", "ref", "cache", "aborted"},
		},
		{
			name: "nothing written is a 200 without body", method: http.MethodHead, uri: "/v2/",
			handler: func(http.ResponseWriter, *http.Request) {},
			want:    logrus.Fields{"method": "HEAD", "path": "/v2/", "status": 200, "bytes": int64(0)},
		},
		{
			name: "an early hint is not the status", method: http.MethodGet, uri: "/v2/",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusPartialContent)
				fmt.Fprint(w, "part")
			},
			want: logrus.Fields{"status": 206, "bytes": int64(4)},
		},
		{
			name: "what the handler learnt", method: http.MethodGet, uri: "/v2/quay.io/org/app/blobs/sha256:abc",
			handler: func(w http.ResponseWriter, r *http.Request) {
				info := logx.InfoFrom(r.Context())
				info.SetRoute("quay.io", "org/app", "sha256:abc")
				info.SetCache("HIT")
				info.Set("client", "user:alice")
				info.Set("client", "user:bob") // the last value wins
				fmt.Fprint(w, "blob")
			},
			want: logrus.Fields{"upstream": "quay.io", "repo": "org/app", "ref": "sha256:abc", "cache": "HIT", "client": "user:bob", "bytes": int64(4)},
		},
		{
			name: "fields of the middleware's own", method: http.MethodGet, uri: "/v2/",
			fields:  func(r *http.Request) logrus.Fields { return logrus.Fields{"connect": "registry-1.docker.io:443"} },
			handler: func(http.ResponseWriter, *http.Request) {},
			want:    logrus.Fields{"connect": "registry-1.docker.io:443", "status": 200},
		},
		{
			name: "secrets in the query", method: http.MethodPut, uri: "/v2/org/app/blobs/uploads/u1?_state=c2VjcmV0LXN0YXRl&digest=sha256:abc",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) },
			want:    logrus.Fields{"method": "PUT", "path": "/v2/org/app/blobs/uploads/u1?_state=REDACTED&digest=sha256:abc", "status": 201},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logger, lines := newLogger()
			srv := httptest.NewServer(logx.AccessLogWith(logger, tc.fields, tc.handler))
			defer srv.Close()
			get(t, srv, tc.method, tc.uri)
			l, _ := accessLine(t, lines)
			for k, v := range tc.want {
				if l.fields[k] != v {
					t.Errorf("%s = %#v, want %#v (line %s)", k, l.fields[k], v, l.text)
				}
			}
			for _, k := range tc.absent {
				if _, ok := l.fields[k]; ok {
					t.Errorf("%s set on a request that did not set it (line %s)", k, l.text)
				}
			}
			if d, ok := l.fields["dur_ms"].(int64); !ok || d < 0 {
				t.Errorf("dur_ms = %#v, want a count of milliseconds", l.fields["dur_ms"])
			}
			if host, _, err := net.SplitHostPort(fmt.Sprint(l.fields["remote"])); err != nil || host != "127.0.0.1" {
				t.Errorf("remote = %#v, want the client's 127.0.0.1:port", l.fields["remote"])
			}
		})
	}
}

// TestLinesWhileServingNameTheRequest: a line logged through From during
// the request carries its method and redacted path; no line carries the
// query's secret.
func TestLinesWhileServingNameTheRequest(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	srv := httptest.NewServer(logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logx.From(r.Context()).WithField(logx.FieldDigest, "sha256:abc").Warn("upstream slow")
	})))
	defer srv.Close()
	get(t, srv, http.MethodGet, "/data?X-Amz-Signature=fe5f80f77d5f&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE")
	access, before := accessLine(t, lines)
	if len(before) != 1 || before[0].fields["method"] != "GET" || before[0].fields["path"] != "/data?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED" {
		t.Fatalf("lines before the access line: %+v", before)
	}
	for _, l := range append(before, access) {
		for _, secret := range []string{"fe5f80f77d5f", "AKIAIOSFODNN7EXAMPLE"} {
			if strings.Contains(l.text, secret) {
				t.Errorf("line %q shows the secret %q", l.text, secret)
			}
		}
	}
}

// TestAbortedRequest: a handler that gives up with http.ErrAbortHandler
// gets one line with aborted=true, and the panic reaches net/http.
func TestAbortedRequest(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	h := logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logx.InfoFrom(r.Context()).SetCache("MISS")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "partial")
		panic(http.ErrAbortHandler)
	}))
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/org/app/blobs/sha256:abc", nil))
	}()
	if recovered != http.ErrAbortHandler { //nolint:errorlint // net/http recognises this panic value by identity, not errors.Is
		t.Fatalf("recovered %v, want the handler's http.ErrAbortHandler", recovered)
	}
	l := next(t, lines)
	if l.msg != "request" || l.fields["aborted"] != true || l.fields["cache"] != "MISS" || l.fields["bytes"] != int64(7) {
		t.Fatalf("line = %s, want the access line with aborted=true", l.text)
	}
	if len(lines) != 0 {
		t.Fatalf("more than one line: %s", (<-lines).text)
	}
}

// TestAbortedResponseCutsTheConnection: through a real server, the client
// of an aborted response sees its body cut short, never a complete one.
func TestAbortedResponseCutsTheConnection(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	srv := httptest.NewServer(logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		fmt.Fprint(w, strings.Repeat("x", 100))
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		panic(http.ErrAbortHandler)
	})))
	defer srv.Close()
	_, body, err := get(t, srv, http.MethodGet, "/v2/org/app/blobs/sha256:abc")
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 100 {
		t.Fatalf("client read %d bytes, error %v; want the first 100 bytes and an unexpected EOF", len(body), err)
	}
	l, _ := accessLine(t, lines)
	if l.fields["aborted"] != true || l.fields["bytes"] != int64(100) {
		t.Fatalf("line = %s, want aborted=true bytes=100", l.text)
	}
}

// readFromRecorder is an httptest.ResponseRecorder that can ReadFrom, as
// net/http's own response writer can (with sendfile for an *os.File); it
// remembers the reader it was given.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	src io.Reader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	return io.Copy(r.ResponseRecorder, src)
}

// TestFileReachesSendfile: a file copied into the response reaches the
// server's ReadFrom as the file itself, which is what lets net/http use
// sendfile; the bytes are counted either way.
func TestFileReachesSendfile(t *testing.T) {
	t.Parallel()
	content := strings.Repeat("layer bytes ", 10000)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	serveFile := func(files chan<- *os.File) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			files <- f
			if _, err := io.Copy(w, f); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("the file itself reaches ReadFrom", func(t *testing.T) {
		t.Parallel()
		logger, lines := newLogger()
		files := make(chan *os.File, 1)
		rec := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		logx.AccessLog(logger, serveFile(files)).ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/blob", nil))
		// net's sendfile takes any syscall.Conn: the *os.File, or the
		// same file without its WriteTo, which os.File.WriteTo hands on.
		f := <-files
		sc, isConn := rec.src.(syscall.Conn)
		named, hasName := rec.src.(interface{ Name() string })
		if !isConn || sc == nil || !hasName || named.Name() != f.Name() {
			t.Fatalf("ReadFrom got %T, want the handler's file %s", rec.src, f.Name())
		}
		if l := next(t, lines); l.fields["bytes"] != int64(len(content)) || rec.Body.String() != content {
			t.Fatalf("bytes = %v, body %d bytes; want %d", l.fields["bytes"], rec.Body.Len(), len(content))
		}
	})
	t.Run("writers without ReadFrom still get every byte", func(t *testing.T) {
		t.Parallel()
		logger, lines := newLogger()
		rec := httptest.NewRecorder()
		logx.AccessLog(logger, serveFile(make(chan *os.File, 1))).ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/blob", nil))
		if l := next(t, lines); l.fields["bytes"] != int64(len(content)) || rec.Body.String() != content {
			t.Fatalf("bytes = %v, body %d bytes; want %d", l.fields["bytes"], rec.Body.Len(), len(content))
		}
	})
	t.Run("a real server serves the file", func(t *testing.T) {
		t.Parallel()
		logger, lines := newLogger()
		srv := httptest.NewServer(logx.AccessLog(logger, serveFile(make(chan *os.File, 1))))
		defer srv.Close()
		_, body, err := get(t, srv, http.MethodGet, "/blob")
		if err != nil || body != content {
			t.Fatalf("body %d bytes, %v; want %d bytes", len(body), err, len(content))
		}
		if l, _ := accessLine(t, lines); l.fields["bytes"] != int64(len(content)) {
			t.Fatalf("bytes = %v, want %d", l.fields["bytes"], len(content))
		}
	})
}

// TestFlushReachesTheClient: bytes flushed through the access log reach
// the client while the handler is still running (a blob streamed as it
// is fetched).
func TestFlushReachesTheClient(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	release := make(chan struct{})
	srv := httptest.NewServer(logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "second")
	})))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/blob", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("read %q, %v before the handler finished; want the flushed %q", first, err, "first")
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if l, _ := accessLine(t, lines); l.fields["bytes"] != int64(len("firstsecond")) {
		t.Fatalf("bytes = %v", l.fields["bytes"])
	}
}

// TestHijackAndResponseController: the shim hijacks CONNECT connections
// and handlers set deadlines through http.ResponseController; both work
// through the access log.
func TestHijackAndResponseController(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	srv := httptest.NewServer(logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.URL.Path == "/deadline" {
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if err := rc.EnableFullDuplex(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, "deadline set")
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		if err := brw.Flush(); err != nil {
			t.Error(err)
		}
	})))
	defer srv.Close()
	for _, tc := range []struct{ path, want string }{{"/deadline", "deadline set"}, {"/hijack", "hijacked"}} {
		resp, body, err := get(t, srv, http.MethodGet, tc.path)
		if err != nil || resp.StatusCode != http.StatusOK || body != tc.want {
			t.Errorf("%s: %d %q %v, want 200 %q", tc.path, resp.StatusCode, body, err, tc.want)
		}
		accessLine(t, lines)
	}
}

// TestHijackUnsupported: a writer that cannot be hijacked says so with
// http.ErrNotSupported, as net/http's own writers do.
func TestHijackUnsupported(t *testing.T) {
	t.Parallel()
	logger, _ := newLogger()
	var err error
	logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, err = w.(http.Hijacker).Hijack()
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil))
	if !errors.Is(err, http.ErrNotSupported) {
		t.Fatalf("Hijack error = %v, want http.ErrNotSupported", err)
	}
}

// TestInfoConcurrentSetters: the fill and the request goroutine both
// report on one request; every report reaches the line (run with -race).
func TestInfoConcurrentSetters(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	const n = 20
	logx.AccessLog(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := logx.InfoFrom(r.Context())
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				info.Set(fmt.Sprintf("k%d", i), i)
				info.SetRoute("docker.io", "library/alpine", "latest")
				info.SetCache("HIT")
			})
		}
		wg.Wait()
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil))
	l := next(t, lines)
	for i := range n {
		if l.fields[fmt.Sprintf("k%d", i)] != i {
			t.Errorf("k%d missing from %s", i, l.text)
		}
	}
	if l.fields["cache"] != "HIT" || l.fields["repo"] != "library/alpine" {
		t.Errorf("line = %s", l.text)
	}
}

// TestOutsideAccessLog: code that runs without the middleware (start-up,
// background work) gets the standard logger and an Info that ignores
// reports instead of a crash.
func TestOutsideAccessLog(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	info := logx.InfoFrom(ctx)
	if info != nil {
		t.Fatalf("InfoFrom = %v outside a request, want nil", info)
	}
	info.Set("k", "v")
	info.SetRoute("docker.io", "library/alpine", "latest")
	info.SetCache("HIT")
	if up, repo, ref := info.Route(); up != "" || repo != "" || ref != "" {
		t.Fatalf("Route() = %q %q %q on a nil Info", up, repo, ref)
	}
	if e := logx.From(ctx); e.Logger != logrus.StandardLogger() {
		t.Fatalf("From = %v, want an entry of the standard logger", e)
	}
	logger, _ := newLogger()
	e := logrus.NewEntry(logger).WithField("job", "gc")
	if got := logx.From(logx.WithEntry(ctx, e)); got != e {
		t.Fatalf("From(WithEntry(e)) = %v, want e", got)
	}
}

// TestServerLog: net/http's error lines reach the logger at debug level,
// one entry per line, without a goroutine of their own.
func TestServerLog(t *testing.T) {
	t.Parallel()
	logger, lines := newLogger()
	logx.ServerLog(logger, "http: ").Printf("TLS handshake error from %s: EOF", "127.0.0.1:1234")
	select {
	case l := <-lines:
		if l.msg != "http: TLS handshake error from 127.0.0.1:1234: EOF" || !strings.Contains(l.text, "level=debug") {
			t.Fatalf("logged %q (%s)", l.msg, l.text)
		}
	default:
		t.Fatal("nothing logged")
	}
}
