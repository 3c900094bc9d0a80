package testreg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
)

// server is one loopback HTTP(S) listener that can be stopped (connections
// are then refused) and restarted on the same address.
type server struct {
	handler   http.Handler
	tlsConfig *tls.Config // nil: plain HTTP
	http1Only bool
	// baseContext carries the logContext into every request.
	baseContext func(net.Listener) context.Context

	mu   sync.Mutex
	addr string // "127.0.0.1:PORT" once started
	srv  *http.Server
	done chan struct{} // closed when the current Serve returns
}

// start listens on s.addr (or a fresh loopback port the first time) and
// serves in a goroutine. Starting a running server is a no-op.
func (s *server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("testreg: listen on %s: %w", addr, err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{
		Handler:     s.handler,
		ErrorLog:    log.New(io.Discard, "", 0),
		BaseContext: s.baseContext,
	}
	if s.tlsConfig != nil {
		srv.TLSConfig = s.tlsConfig.Clone()
		if s.http1Only {
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if s.tlsConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("testreg: serve %s: %v", s.addr, err)
		}
	}()
	s.srv, s.done = srv, done
	return nil
}

// stop closes the listener and every open connection, and waits until the
// serve loop has returned. Stopping a stopped server is a no-op.
func (s *server) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv, s.done = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

// hostPort returns "127.0.0.1:PORT".
func (s *server) hostPort() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}
