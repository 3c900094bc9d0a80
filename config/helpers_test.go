package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// envMap is the env lookup Load gets in tests.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hosts lists the registry hosts of c.
func hosts(c *Config) []string {
	out := []string{}
	for _, r := range c.Registries {
		out = append(out, r.Host)
	}
	return out
}

// wantKeyError checks that err is a *KeyError for key whose message is want
// (when want is not empty).
func wantKeyError(t *testing.T, err error, key, want string) {
	t.Helper()
	var ke *KeyError
	if !errors.As(err, &ke) {
		t.Fatalf("error = %v (%T), want a *KeyError for %s", err, err, key)
	}
	if ke.Key != key {
		t.Errorf("KeyError.Key = %q, want %q (error %q)", ke.Key, key, err)
	}
	if want != "" && err.Error() != want {
		t.Errorf("error = %q\n          want %q", err, want)
	}
}
