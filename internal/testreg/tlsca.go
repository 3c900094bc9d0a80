package testreg

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gmarcy/container-registry-proxy/internal/testca"
)

// testCA is one throwaway certificate authority and the single leaf
// certificate (valid for every loopback name the registry uses) it signed.
type testCA struct {
	pool   *x509.CertPool
	leaf   tls.Certificate
	caFile string
}

// newTestCA makes a CA and a leaf for 127.0.0.1, ::1, localhost and names,
// and writes the CA certificate as PEM into dir/ca.crt.
func newTestCA(dir string, names []string) (*testCA, error) {
	ca, err := testca.New("testreg CA")
	if err != nil {
		return nil, fmt.Errorf("testreg: %w", err)
	}
	leaf, err := ca.Leaf(append([]string{"127.0.0.1", "::1", "localhost"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("testreg: %w", err)
	}
	t := &testCA{pool: ca.Pool, leaf: leaf.TLS, caFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(t.caFile, ca.PEM, 0o644); err != nil {
		return nil, fmt.Errorf("testreg: write CA file: %w", err)
	}
	return t, nil
}

// serverConfig is the TLS configuration every listener of one Registry uses.
func (ca *testCA) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.leaf},
		MinVersion:   tls.VersionTLS12,
	}
}
