package testca

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
)

// TestLeafServesTLS: a client trusting only the CA's pool completes a
// handshake with the leaf for each of its names, and the PEM forms load.
func TestLeafServesTLS(t *testing.T) {
	t.Parallel()
	ca, err := New("testca test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf("upstream.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM); err != nil {
		t.Fatalf("PEM pair: %v", err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM does not parse")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.WriteString(c, "ok"); c.Close() }()
		}
	}()
	for _, name := range []string{"upstream.test", "127.0.0.1"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: name})
		if err != nil {
			t.Fatalf("handshake as %s: %v", name, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "ok" {
			t.Fatalf("as %s: read %q", name, b)
		}
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "other.test"}); err == nil {
		t.Fatal("handshake for a name the leaf does not hold succeeded")
	}
}
