package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

// TestStartupFailureReleasesTheCache: when start-up fails after the cache
// directory was locked and its index opened (here: an htpasswd file with
// a plain-text password), both are released, so that the next start (or gc, or
// warm --direct) finds the directory free.
func TestStartupFailureReleasesTheCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	users := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(users, []byte("bob:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load([]string{"--cache-dir", cache, "--ca-dir", filepath.Join(dir, "ca"),
		"--htpasswd", users, "--no-docker-hub"}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	a, err := build(t.Context(), cfg, log)
	if err == nil || a != nil || !strings.Contains(err.Error(), "clientAuth.htpasswd") {
		t.Fatalf("build: %v, %v; want the htpasswd error naming its key", a, err)
	}
	if _, err := os.Stat(filepath.Join(cache, ".lock")); err != nil {
		t.Fatalf("the cache directory was never locked: %v", err)
	}
	lock, alone, err := storage.LockDir(cache)
	if err != nil || !alone {
		t.Fatalf("after the failed start the cache directory is still held (alone=%v, %v)", alone, err)
	}
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartupFailureAfterTheShim: a failure after every part was built
// (the metrics listener's address is taken) closes them all: the cache
// directory is free again, and nothing keeps running (goleak checks the
// shim's server of intercepted connections in TestMain).
func TestStartupFailureAfterTheShim(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	cfg, err := config.Load([]string{"--cache-dir", cache, "--ca-dir", filepath.Join(dir, "ca"),
		"--metrics-listen", taken.Addr().String(), "--no-docker-hub"}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(&testutil.SyncBuffer{})
	if a, err := build(t.Context(), cfg, log); err == nil || a != nil || !strings.Contains(err.Error(), "metricsListen") {
		t.Fatalf("build: %v, %v; want the metrics listener's error naming its key", a, err)
	}
	lock, alone, err := storage.LockDir(cache)
	if err != nil || !alone {
		t.Fatalf("after the failed start the cache directory is still held (alone=%v, %v)", alone, err)
	}
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartupClearsTemporaryFiles: the temporary files that writes of a
// killed run left in the cache directory (a link, a tag record, the
// readiness probe's) are removed at start; the content beside them stays
// and the start says how many it removed.
func TestStartupClearsTemporaryFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	repo := filepath.Join(cache, "repositories", "docker.io", "library", "alpine")
	uuid := "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	link := filepath.Join(repo, "_links", "sha256", strings.Repeat("ab", 32))
	stale := []string{
		link + "." + uuid + ".tmp",
		filepath.Join(repo, "_tags", "latest."+uuid+".tmp"),
		filepath.Join(cache, "_health", "probe-5f3c."+uuid+".tmp"),
	}
	for _, p := range append([]string{link}, stale...) {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(`{"size":5}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, logs, _, stop := runProxyIn(t, dir, "dockerHub: false\n")
	stop()
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the start (%v)", p, err)
		}
	}
	if _, err := os.Stat(link); err != nil {
		t.Errorf("the link was removed: %v", err)
	}
	if !strings.Contains(logs.String(), "cleared temporary files left by writes of an earlier run") || !strings.Contains(logs.String(), "count=3") {
		t.Errorf("the start does not say what it cleared:\n%s", logs)
	}
}
