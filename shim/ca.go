package shim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names inside the CA directory: the original nginx project's, so its
// /ca volume keeps working.
const (
	// CACertFile is the CA certificate (PEM), served at /ca.crt.
	CACertFile = "ca.crt"
	// CAKeyFile is the CA private key (PEM), mode 0600 when we create it.
	CAKeyFile = "ca.key"
)

// caValidity is the lifetime of a CA we create: long, because every client
// has to be told to trust a new one.
const caValidity = 10 * 365 * 24 * time.Hour

// ErrInvalidCA is wrapped by every error of LoadOrCreateCA about the
// content of the CA directory (missing half, unparsable, mismatched, not a
// CA), so callers can tell a configuration problem from an I/O failure
// with errors.Is.
var ErrInvalidCA = errors.New("invalid CA")

// CA is the certificate authority the shim signs leaf certificates with.
// Clients trust it once (GET /ca.crt, /setup/systemd); it must therefore
// survive restarts, which is why it lives in a directory and is only ever
// created when that directory holds neither file.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// Certificate returns the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// PEM returns the CA certificate in PEM form, as served at /ca.crt. Only
// the certificate block is kept, so whatever else the file on disk holds
// can never be served.
func (c *CA) PEM() []byte { return append([]byte(nil), c.pem...) }

// LoadOrCreateCA loads <dir>/ca.crt and <dir>/ca.key, or creates both when
// both are absent: an ECDSA P-256 self-signed CA valid for ten years, the
// directory mode 0700 (when we create it), the key 0600 and the certificate
// 0644, each written atomically. RSA and ECDSA keys in PKCS#8, PKCS#1 and
// SEC 1 form are accepted, so the original project's openssl-made CA keeps
// working. Any other state of the directory (one file only, unreadable or
// unparsable files, a key that does not match the certificate, a
// certificate that is not a usable CA) is an error naming the file.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath) //nolint:gosec // G304: the operator's CA directory; reading it is the point
	keyPEM, keyErr := os.ReadFile(keyPath)    //nolint:gosec // G304: the operator's CA directory; reading it is the point
	certMissing := errors.Is(certErr, fs.ErrNotExist)
	keyMissing := errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		return createCA(dir, certPath, keyPath)
	case certMissing:
		return nil, fmt.Errorf("CA certificate %s: %w: missing while %s exists; restore it, or remove both files to create a new CA", certPath, ErrInvalidCA, keyPath)
	case keyMissing:
		return nil, fmt.Errorf("CA key %s: %w: missing while %s exists; restore it, or remove both files to create a new CA", keyPath, ErrInvalidCA, certPath)
	case certErr != nil:
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("CA key %s: %w", keyPath, keyErr)
	}
	return parseCA(certPath, certPEM, keyPath, keyPEM, time.Now())
}

// parseCA checks a certificate and key read from disk and pairs them.
func parseCA(certPath string, certPEM []byte, keyPath string, keyPEM []byte, now time.Time) (*CA, error) {
	block := findPEMBlock(certPEM, "CERTIFICATE")
	if block == nil {
		return nil, fmt.Errorf("CA certificate %s: %w: no PEM CERTIFICATE block", certPath, ErrInvalidCA)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w: %w", certPath, ErrInvalidCA, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s: %w: not a CA certificate (basicConstraints CA:TRUE missing)", certPath, ErrInvalidCA)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %s: %w: key usage does not allow signing certificates", certPath, ErrInvalidCA)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("CA certificate %s: %w: expired on %s; remove both files to create a new CA", certPath, ErrInvalidCA, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := parseCAKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w: %w", keyPath, ErrInvalidCA, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s: %w: does not match the certificate in %s", keyPath, ErrInvalidCA, certPath)
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(block)}, nil
}

// findPEMBlock returns the first PEM block of the given type in data,
// skipping others (openssl's "EC PARAMETERS", comments).
func findPEMBlock(data []byte, types ...string) *pem.Block {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil
		}
		for _, t := range types {
			if block.Type == t {
				return block
			}
		}
	}
}

// parseCAKey accepts PKCS#8 ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY")
// and PKCS#1 ("RSA PRIVATE KEY") keys.
func parseCAKey(data []byte) (crypto.Signer, error) {
	block := findPEMBlock(data, "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
	if block == nil {
		return nil, errors.New("no PEM private key block (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "" {
		return nil, errors.New("encrypted private keys are not supported")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return signer, nil
}

// createCA makes a new CA and writes it into dir.
func createCA(dir, certPath, keyPath string) (*CA, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("CA directory %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // G302: a directory needs its x bit; 0700 is owner-only
			return nil, fmt.Errorf("CA directory %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerialNumber()
	if err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown host"
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("container-registry-proxy CA (%s)", host)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing new CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// The key goes first: a crash in between leaves a key without a
	// certificate, which LoadOrCreateCA reports rather than silently
	// replacing a CA that clients may already trust.
	if err := writeCAFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if err := writeCAFile(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	return &CA{cert: cert, key: key, pem: certPEM}, nil
}

// newSerialNumber returns a random 128-bit serial number with its top bit set,
// so it is always positive and exactly 128 bits long.
func newSerialNumber() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	b[0] |= 0x80
	return new(big.Int).SetBytes(b), nil
}

// writeCAFile writes data to a temporary file beside path with the
// given mode and renames it into place, so readers never see a partial
// file and the key is never readable by others, not even briefly.
func writeCAFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := writeAndClose(f, data, mode); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// writeAndClose gives f mode, writes data, syncs and closes it; f is
// closed whatever fails.
func writeAndClose(f *os.File, data []byte, mode os.FileMode) error {
	err := f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
