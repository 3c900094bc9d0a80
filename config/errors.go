package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownKey marks a YAML key that the Config struct does not have. It is
// wrapped in a KeyError naming the key's full path.
var ErrUnknownKey = errors.New("unknown key")

// KeyError is the one error type Load and Validate return for a bad setting,
// so that the caller can print it as one line and exit with status 2. Key
// is the name the user wrote: a flag ("--listen"), an environment variable
// ("MANIFEST_CACHE_PRIMARY_TIME") or a YAML path ("registries[1].endpoint").
type KeyError struct {
	Key   string
	Value string
	Err   error
}

// Error formats the error as `<key>: invalid value "<value>": <err>`. When
// Err is a ValueError about the same value (which already quotes it), the
// value is not repeated: `<key>: invalid duration "10x": unknown unit "x"`.
// Errors about the key itself rather than a value (an unknown YAML key, a
// list where a mapping belongs, an unparsable file) read `<key>: <err>`,
// e.g. `manifestCache.primaryTme: unknown key (config.yml:7)`.
func (e *KeyError) Error() string {
	if isSecretKey(e.Key) {
		// Never echo what was written under a secret's key.
		return e.Key + ": " + e.Err.Error()
	}
	var ve *ValueError
	if errors.As(e.Err, &ve) && ve.Value == e.Value {
		return e.Key + ": " + e.Err.Error()
	}
	var nv *noValueError
	if errors.As(e.Err, &nv) {
		return e.Key + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s: invalid value %q: %v", e.Key, e.Value, e.Err)
}

// isSecretKey reports whether key holds a secret (a password, or
// AUTH_REGISTRIES with its passwords), whose value is never printed.
func isSecretKey(key string) bool {
	k := strings.ToLower(key)
	return strings.HasSuffix(k, "password") || strings.HasPrefix(k, "auth_registries")
}

// Unwrap returns the underlying error, for errors.Is and errors.As.
func (e *KeyError) Unwrap() error { return e.Err }

// ValueError reports a string that does not parse as the expected kind
// ("duration", "size", "boolean"). ParseDuration and ParseSize return it.
type ValueError struct {
	Kind   string
	Value  string
	Reason string
}

// Error formats the error as `invalid <kind> "<value>": <reason>`.
func (e *ValueError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Kind, e.Value, e.Reason)
}

// noValueError marks an error about a key itself, with no value to quote.
type noValueError struct{ err error }

func (e *noValueError) Error() string { return e.err.Error() }
func (e *noValueError) Unwrap() error { return e.err }

func noValue(err error) error { return &noValueError{err: err} }
