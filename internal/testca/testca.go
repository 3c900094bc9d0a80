// Package testca makes throwaway certificate authorities and server
// certificates for TLS on loopback: the in-process test registries
// (internal/testreg) and the benchmark's TLS upstream. Standard library
// only, so that the benchmark program stays free of the registry's
// dependencies. Never for production certificates (shim/ has its own CA).
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Authority is an ECDSA P-256 CA valid from an hour ago for two days.
type Authority struct {
	Cert *x509.Certificate
	PEM  []byte         // the CA certificate, PEM
	Pool *x509.CertPool // holds Cert: a client's RootCAs
	key  *ecdsa.PrivateKey
}

// New makes a CA named commonName.
func New(commonName string) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testca: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testca: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testca: parse CA certificate: %w", err)
	}
	a := &Authority{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: x509.NewCertPool(), key: key}
	a.Pool.AddCert(cert)
	return a, nil
}

// Leaf is a server certificate the Authority signed.
type Leaf struct {
	// TLS is the certificate with its chain (leaf, CA) and key, for a
	// tls.Config.
	TLS tls.Certificate
	// CertPEM and KeyPEM are the leaf certificate and its PKCS#8 key, for
	// servers configured with files.
	CertPEM, KeyPEM []byte
}

// Leaf signs a server certificate for names: IP addresses and DNS names,
// the first one also its common name. It is valid for a day.
func (a *Authority) Leaf(names ...string) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testca: leaf key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if tmpl.Subject.CommonName == "" {
			tmpl.Subject.CommonName = n
		}
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("testca: leaf certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testca: leaf key: %w", err)
	}
	return &Leaf{
		TLS:     tls.Certificate{Certificate: [][]byte{der, a.Cert.Raw}, PrivateKey: key},
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// serial returns a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}
