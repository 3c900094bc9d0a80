package shim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caFixture is a CA made by a test, written the way openssl would.
type caFixture struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
}

// makeCAFixture creates a self-signed certificate for key; isCA and the
// validity window are the test's to choose. keyType is the PEM block type
// to encode the key with (PKCS#8, PKCS#1 or SEC 1).
func makeCAFixture(t *testing.T, key crypto.Signer, keyType string, isCA bool, notBefore, notAfter time.Time) caFixture {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	var keyDER []byte
	switch keyType {
	case "RSA PRIVATE KEY":
		keyDER = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	case "EC PRIVATE KEY":
		keyDER, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	default:
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	}
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: keyDER})
	if keyType == "EC PRIVATE KEY" {
		// openssl ecparam -genkey puts the curve parameters first.
		keyPEM = append([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"), keyPEM...)
	}
	return caFixture{certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM: keyPEM, cert: cert}
}

func fixtureECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeCAFixture writes the fixture's files into a new directory.
func writeCAFixture(t *testing.T, f caFixture) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, CACertFile), f.certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), f.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadOrCreateCACreatesOnceThenReuses(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "ca")
	first, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := first.Certificate()

	t.Run("reused", func(t *testing.T) {
		if c.SerialNumber.Cmp(second.Certificate().SerialNumber) != 0 {
			t.Errorf("serial changed: %v then %v", c.SerialNumber, second.Certificate().SerialNumber)
		}
		if !second.key.Public().(*ecdsa.PublicKey).Equal(first.key.Public()) {
			t.Error("key changed between loads")
		}
		if string(first.PEM()) != string(second.PEM()) {
			t.Error("PEM changed between loads")
		}
		onDisk, err := os.ReadFile(filepath.Join(dir, CACertFile))
		if err != nil || string(onDisk) != string(first.PEM()) {
			t.Errorf("PEM() differs from ca.crt on disk (err %v)", err)
		}
	})
	t.Run("modes", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			want os.FileMode
		}{
			{dir, 0o700 | os.ModeDir},
			{filepath.Join(dir, CAKeyFile), 0o600},
			{filepath.Join(dir, CACertFile), 0o644},
		} {
			fi, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tc.want {
				t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.want)
			}
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Errorf("CA directory holds %d entries, want ca.crt and ca.key only", len(entries))
		}
	})
	t.Run("certificate", func(t *testing.T) {
		if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
			t.Errorf("basic constraints: IsCA %v valid %v maxPathLen %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
		}
		if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
			t.Errorf("key usage %v", c.KeyUsage)
		}
		if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || c.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("public key %T, want ECDSA", c.PublicKey)
		}
		if life := c.NotAfter.Sub(c.NotBefore); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
			t.Errorf("validity %v, want about 10 years", life)
		}
		if c.SerialNumber.BitLen() <= 64 {
			t.Errorf("serial %v has only %d bits", c.SerialNumber, c.SerialNumber.BitLen())
		}
		if !strings.HasPrefix(c.Subject.CommonName, "container-registry-proxy CA (") {
			t.Errorf("subject CN %q", c.Subject.CommonName)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("not self-signed: %v", err)
		}
	})
}

func TestLoadOrCreateCAExistingDirKeepsMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("existing directory mode changed to %v", fi.Mode().Perm())
	}
}

func TestLoadOrCreateCAAcceptsExistingKeys(t *testing.T) {
	t.Parallel()
	now := time.Now()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		keyType string
	}{
		{"rsa pkcs1 (openssl genrsa)", rsaKey, "RSA PRIVATE KEY"},
		{"rsa pkcs8", rsaKey, "PRIVATE KEY"},
		{"ecdsa sec1 with EC PARAMETERS", fixtureECKey(t), "EC PRIVATE KEY"},
		{"ecdsa pkcs8", fixtureECKey(t), "PRIVATE KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := makeCAFixture(t, tc.key, tc.keyType, true, now.Add(-time.Hour), now.Add(24*time.Hour))
			dir := writeCAFixture(t, f)
			ca, err := LoadOrCreateCA(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !ca.Certificate().Equal(f.cert) {
				t.Error("loaded a different certificate")
			}
			if string(ca.PEM()) != string(f.certPEM) {
				t.Error("PEM() differs from the file")
			}
			// The CA can sign: a leaf verifies against it.
			leaf, err := NewMinter(ca, MinterOptions{}).Certificate("registry.test")
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.Leaf.CheckSignatureFrom(f.cert); err != nil {
				t.Errorf("leaf not signed by the CA: %v", err)
			}
		})
	}
}

func TestLoadOrCreateCARejectsBadDirectories(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := makeCAFixture(t, fixtureECKey(t), "PRIVATE KEY", true, now.Add(-time.Hour), now.Add(24*time.Hour))
	other := makeCAFixture(t, fixtureECKey(t), "PRIVATE KEY", true, now.Add(-time.Hour), now.Add(24*time.Hour))
	notCA := makeCAFixture(t, fixtureECKey(t), "PRIVATE KEY", false, now.Add(-time.Hour), now.Add(24*time.Hour))
	expired := makeCAFixture(t, fixtureECKey(t), "PRIVATE KEY", true, now.Add(-48*time.Hour), now.Add(-24*time.Hour))

	for _, tc := range []struct {
		name     string
		cert     []byte // nil: file absent
		key      []byte
		keyIsDir bool
		badFile  string // the file the error must name
		invalid  bool   // errors.Is(err, ErrInvalidCA)
		want     string
	}{
		{name: "certificate only", cert: good.certPEM, badFile: CAKeyFile, invalid: true, want: "missing"},
		{name: "key only", key: good.keyPEM, badFile: CACertFile, invalid: true, want: "missing"},
		{name: "corrupt certificate", cert: []byte("not a certificate\n"), key: good.keyPEM, badFile: CACertFile, invalid: true, want: "no PEM CERTIFICATE block"},
		{name: "certificate with garbage DER", cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), key: good.keyPEM, badFile: CACertFile, invalid: true},
		{name: "corrupt key", cert: good.certPEM, key: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), badFile: CAKeyFile, invalid: true},
		{name: "key without PEM", cert: good.certPEM, key: []byte("hello"), badFile: CAKeyFile, invalid: true, want: "no PEM private key block"},
		{name: "encrypted key", cert: good.certPEM, key: []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), badFile: CAKeyFile, invalid: true, want: "encrypted"},
		{name: "mismatched key", cert: good.certPEM, key: other.keyPEM, badFile: CAKeyFile, invalid: true, want: "does not match"},
		{name: "not a CA", cert: notCA.certPEM, key: notCA.keyPEM, badFile: CACertFile, invalid: true, want: "not a CA"},
		{name: "expired CA", cert: expired.certPEM, key: expired.keyPEM, badFile: CACertFile, invalid: true, want: "expired"},
		{name: "unreadable key", cert: good.certPEM, keyIsDir: true, badFile: CAKeyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.cert != nil {
				if err := os.WriteFile(filepath.Join(dir, CACertFile), tc.cert, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.key != nil {
				if err := os.WriteFile(filepath.Join(dir, CAKeyFile), tc.key, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.keyIsDir {
				if err := os.Mkdir(filepath.Join(dir, CAKeyFile), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			ca, err := LoadOrCreateCA(dir)
			if err == nil {
				t.Fatalf("loaded %v, want an error", ca.Certificate().Subject)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.badFile)) {
				t.Errorf("error %q does not name %s", err, tc.badFile)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if got := errors.Is(err, ErrInvalidCA); got != tc.invalid {
				t.Errorf("errors.Is(err, ErrInvalidCA) = %v, want %v (%v)", got, tc.invalid, err)
			}
			// Nothing was created or replaced.
			if tc.cert == nil && caFileExists(filepath.Join(dir, CACertFile)) {
				t.Error("ca.crt was created beside an existing key")
			}
			if tc.key == nil && !tc.keyIsDir && caFileExists(filepath.Join(dir, CAKeyFile)) {
				t.Error("ca.key was created beside an existing certificate")
			}
		})
	}
}

func caFileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
