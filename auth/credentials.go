package auth

import (
	"crypto/sha256"
	"encoding/hex"
)

// Credentials are the username and password the proxy presents to one
// upstream (Basic auth, or at its token realm). The zero value means
// anonymous.
type Credentials struct {
	Username string
	Password string
}

// IsZero reports whether no credentials are set (anonymous access).
func (c Credentials) IsZero() bool { return c.Username == "" && c.Password == "" }

// Identity returns a string that tells credentials apart without revealing
// the password: the username and a short SHA-256 of the password. It keys
// the token cache, so tokens obtained with one identity are never handed to
// requests made with another. Anonymous credentials have identity "".
func (c Credentials) Identity() string {
	if c.IsZero() {
		return ""
	}
	sum := sha256.Sum256([]byte(c.Username + "\x00" + c.Password))
	return c.Username + "#" + hex.EncodeToString(sum[:6])
}

// String redacts the password so Credentials can be printed or logged by
// mistake without leaking it.
func (c Credentials) String() string {
	if c.IsZero() {
		return "anonymous"
	}
	return c.Username + ":***"
}

// GoString redacts the password for %#v as well.
func (c Credentials) GoString() string {
	return "auth.Credentials{" + c.String() + "}"
}
