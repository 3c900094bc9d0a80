package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// adminGCPath is the admin gc endpoint, on the main listener and on the
// metrics listener.
const adminGCPath = "/_admin/gc"

// adminTokenFile is the file in the cache directory that holds the admin
// token a proxy without admin.token generated at start: the gc subcommand
// beside it reads it (it runs as the same user, or root).
const adminTokenFile = "admin.token"

// adminToken returns the token of the admin endpoints: admin.token, the
// content of admin.tokenFile, or a random one that this start writes to
// <cacheDir>/admin.token (mode 0600) for the gc subcommand.
func adminToken(cfg *config.Config) (string, error) {
	if t, err := configuredAdminToken(cfg); t != "" || err != nil {
		return t, err
	}
	t := rand.Text() + rand.Text()
	p := filepath.Join(cfg.CacheDir, adminTokenFile)
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte(t+"\n"), 0o600); err != nil { //nolint:gosec // G703: the operator's cache directory
		return "", &configError{errors.Join(fmt.Errorf("cacheDir %s: writing the admin token: %w", cfg.CacheDir, err), removeIfThere(tmp))}
	}
	if err := os.Rename(tmp, p); err != nil { //nolint:gosec // G703: the operator's cache directory
		return "", &configError{errors.Join(fmt.Errorf("cacheDir %s: writing the admin token: %w", cfg.CacheDir, err), removeIfThere(tmp))}
	}
	return t, nil
}

// removeIfThere removes the file p; a missing one is no error.
func removeIfThere(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) { //nolint:gosec // G703: a path of ours in the cache directory
		return err
	}
	return nil
}

// configuredAdminToken returns admin.token or the content of
// admin.tokenFile (one trailing newline dropped), "" when neither is set.
func configuredAdminToken(cfg *config.Config) (string, error) {
	if cfg.Admin.TokenFile == "" {
		return cfg.Admin.Token, nil
	}
	b, err := os.ReadFile(cfg.Admin.TokenFile) //nolint:gosec // G703: the operator names the file
	if err != nil {
		return "", &configError{&config.KeyError{Key: "admin.tokenFile", Value: cfg.Admin.TokenFile, Err: err}}
	}
	t := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if len(t) < config.MinAdminToken || strings.ContainsAny(t, "\r\n") {
		return "", &configError{&config.KeyError{Key: "admin.tokenFile", Value: cfg.Admin.TokenFile,
			Err: fmt.Errorf("want one line of at least %d characters", config.MinAdminToken)}}
	}
	return t, nil
}

// adminTokenFor is the token the gc subcommand sends to the proxy running
// on cfg's cache: the configured one, else the one that proxy generated.
func adminTokenFor(cfg *config.Config) (string, error) {
	if t, err := configuredAdminToken(cfg); t != "" || err != nil {
		return t, err
	}
	b, err := os.ReadFile(filepath.Join(cfg.CacheDir, adminTokenFile)) //nolint:gosec // G703: the operator's cache directory
	if err != nil {
		return "", fmt.Errorf("reading the running proxy's admin token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// adminGC serves POST /_admin/gc: one eviction pass now (the gc
// subcommand beside a running proxy). It requires the admin token as
// "Authorization: Bearer <token>", compared in constant time: the
// client's address proves nothing (a TLS front end on the same host makes
// every client a loopback one).
func adminGC(life *cache.Lifecycle, token string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !bearerIs(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="container-registry-proxy admin"`)
			http.Error(w, "the admin token is required: Authorization: Bearer <admin.token>", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		rep, err := life.Collect(r.Context())
		switch {
		case errors.Is(err, storage.ErrEvictingElsewhere):
			http.Error(w, err.Error(), http.StatusConflict)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(rep); err != nil {
			logx.From(r.Context()).WithError(err).Debug("admin gc: answer cut short")
		}
	}
}

// bearerIs reports whether r carries "Authorization: Bearer <token>";
// an empty token matches nothing.
func bearerIs(r *http.Request, token string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}
