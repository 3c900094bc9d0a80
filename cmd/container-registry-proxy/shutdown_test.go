package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// TestShutdownGrace: on shutdown a fill in progress may finish within
// shutdownGrace (its client gets every byte and the blob is committed);
// a fill still parked when the grace period ends is abandoned: its client
// is cut short, no blob and no upload are left, and serveOn still returns
// nil (exit 0).
func TestShutdownGrace(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		grace   string
		release bool
	}{
		{"fill finishes within the grace period", "20s", true},
		{"fill abandoned when the grace period ends", "1s", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true})
			blob := reg.PushBlob(t, "library/big", testreg.RandomLayer(t, 3<<20))
			dir := t.TempDir()
			addr, logs, _, stop := runProxyIn(t, dir, hubConfig(reg, "shutdownGrace: "+tc.grace+"\n"))
			reg.SetFault(testreg.FaultBlobDelay)
			defer reg.SetFault(testreg.FaultNone)
			type result struct {
				n   int64
				sum string
				err error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := http.Get("http://" + addr + "/v2/docker.io/library/big/blobs/" + blob.Digest.String())
				if err != nil {
					res <- result{err: err}
					return
				}
				defer resp.Body.Close()
				h := sha256.New()
				n, err := io.Copy(h, resp.Body)
				res <- result{n, "sha256:" + hex.EncodeToString(h.Sum(nil)), err}
			}()
			reg.WaitBlobsParked(t, 1)

			start := time.Now()
			stopped := make(chan struct{})
			go func() { stop(); close(stopped) }()
			waitLog(t, logs, "shutting down")
			if tc.release {
				reg.ReleaseBlobs()
			}
			select {
			case <-stopped:
			case <-time.After(30 * time.Second):
				t.Fatal("serveOn did not return 30s after the shutdown began")
			}
			took := time.Since(start)
			r := <-res
			blobPath := filepath.Join(dir, "cache", "blobs", "sha256", blob.Digest.Encoded()[:2], blob.Digest.Encoded(), "data")
			_, statErr := os.Stat(blobPath)
			if tc.release {
				if r.err != nil || r.n != blob.Size || r.sum != blob.Digest.String() {
					t.Errorf("client during a graceful shutdown: %d bytes, %s, %v; want the whole blob", r.n, r.sum, r.err)
				}
				if statErr != nil {
					t.Errorf("the finished fill was not committed: %v", statErr)
				}
				if took > 15*time.Second {
					t.Errorf("shutdown took %s although the fill finished", took)
				}
			} else {
				if r.err == nil && r.n == blob.Size {
					t.Errorf("the abandoned fill's client got a complete body")
				}
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Errorf("blob after an abandoned fill: %v, want none", statErr)
				}
				if took < time.Second || took > 6*time.Second {
					t.Errorf("shutdown took %s, want about the 1s grace period", took)
				}
				if !strings.Contains(logs.String(), "grace period over") {
					t.Errorf("no log line about the grace period:\n%s", logs)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "cache", "_uploads")); len(ents) != 0 {
				t.Errorf("%d uploads left after the shutdown", len(ents))
			}
		})
	}
}

// waitLog waits (bounded) until logs contain s.
func waitLog(t *testing.T, logs *testutil.SyncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", s, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
