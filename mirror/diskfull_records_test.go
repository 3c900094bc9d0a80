package mirror_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestFullDiskManifestPull: on a disk that is already full (a real tmpfs),
// pulling a manifest by tag still answers the verified manifest, the log
// names the cause "disk full" (not a generic storage error), and the
// failed writes of the manifest, its link and its tag record, and of the
// readiness probe, leave no file behind: no driver temporary file "*.tmp",
// no upload.
func TestFullDiskManifestPull(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	root := mountTmpfs(t, "1m", false)
	filler, err := os.Create(filepath.Join(root, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	_, werr := filler.Write(make([]byte, 2<<20))
	filler.Close()
	if werr == nil || !strings.Contains(werr.Error(), "no space left") {
		t.Fatalf("filling the tmpfs: %v", werr)
	}
	e := newEnv(t, envOptions{backend: "filesystem", root: root}, upstreamSpec{host: "registry.test", reg: reg})
	for i := range 3 {
		resp, body := e.do("GET", "/v2/registry.test/app/manifests/v1", "Accept", img.MediaType)
		if resp.StatusCode != 200 || sha(body) != img.ManifestDigest.String() {
			t.Fatalf("GET %d on a full disk: %d %s", i, resp.StatusCode, body)
		}
	}
	// /readyz's probe on the full disk: not ready, and nothing left.
	for range 3 {
		if err := e.store.Probe(t.Context()); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("the readiness probe on a full disk: %v; want ENOSPC", err)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `cause="disk full"`) || strings.Contains(logs, `cause="storage error"`) {
		t.Fatalf("the log does not name the full disk:\n%s", logs)
	}
	var left []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".tmp") || strings.Contains(p, "/_uploads/")) {
			left = append(left, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("failed writes left files on the full disk: %v", left)
	}
}
