package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"

	"github.com/gmarcy/container-registry-proxy/internal/testca"
)

// testPKI is a throwaway CA and one server certificate for the TLS
// upstream (SANs upstreamTLSName and 127.0.0.1), written as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	server                    tls.Certificate
}

// newTestPKI creates the CA and the server certificate in dir.
func newTestPKI(dir string) (*testPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := testca.New("crp bench throwaway CA")
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(upstreamTLSHost)
	leaf, err := ca.Leaf(host, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	p := &testPKI{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"),
		keyFile:  filepath.Join(dir, "server-key.pem"),
		roots:    ca.Pool,
		server:   leaf.TLS,
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{p.caFile, ca.PEM, 0o644}, {p.certFile, leaf.CertPEM, 0o644}, {p.keyFile, leaf.KeyPEM, 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}
