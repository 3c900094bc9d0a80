package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// The benchmarks here run the mirror in-process against benchUpstream, an
// in-memory mirror.Upstream, on the filesystem store the proxy uses, with
// a ResponseWriter that discards the body: they measure the mirror's own
// work, without sockets or a real upstream. The end-to-end figures are in
// docs/benchmarks.md (bench/run.sh).

const (
	benchHost = "upstream.test:5000"
	benchNS   = "upstream.test_5000"
	benchRepo = "bench/app"
	benchTag  = "v1"
)

// benchUpstream serves one image from memory.
type benchUpstream struct {
	manifest []byte
	mdigest  digest.Digest
	blob     []byte
	bdigest  digest.Digest
}

func newBenchUpstream(blobSize int) *benchUpstream {
	blob := make([]byte, blobSize)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(blob)
	u := &benchUpstream{blob: blob, bdigest: digest.FromBytes(blob)}
	u.manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": u.bdigest, "size": blobSize},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": u.bdigest, "size": blobSize}},
	})
	u.mdigest = digest.FromBytes(u.manifest)
	return u
}

func (u *benchUpstream) Manifest(_ context.Context, _, _ string, head bool) (oci.Descriptor, io.ReadCloser, error) {
	desc := oci.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: u.mdigest.String(), Size: int64(len(u.manifest))}
	if head {
		return desc, nil, nil
	}
	return desc, io.NopCloser(bytes.NewReader(u.manifest)), nil
}

func (u *benchUpstream) Blob(_ context.Context, _ string, d digest.Digest) (io.ReadCloser, int64, error) {
	if d != u.bdigest {
		return nil, 0, oci.Errorf(http.StatusNotFound, oci.CodeBlobUnknown, "blob unknown")
	}
	return io.NopCloser(&yieldingReader{r: bytes.NewReader(u.blob)}), int64(len(u.blob)), nil
}

func (u *benchUpstream) BlobFrom(_ context.Context, _ string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	if d != u.bdigest {
		return nil, 0, oci.Errorf(http.StatusNotFound, oci.CodeBlobUnknown, "blob unknown")
	}
	return io.NopCloser(&yieldingReader{r: bytes.NewReader(u.blob[off:])}), int64(len(u.blob)), nil
}

func (u *benchUpstream) StatBlob(_ context.Context, _ string, d digest.Digest) (int64, error) {
	if d != u.bdigest {
		return 0, oci.Errorf(http.StatusNotFound, oci.CodeBlobUnknown, "blob unknown")
	}
	return int64(len(u.blob)), nil
}

func (u *benchUpstream) Get(context.Context, string, string, url.Values) (*http.Response, error) {
	return nil, oci.Errorf(http.StatusNotFound, oci.CodeNameUnknown, "not served by the benchmark upstream")
}

// yieldingReader hands out at most 64 KiB per Read and yields, as bytes
// arriving from a network would, so that a fill's readers run alongside it.
type yieldingReader struct{ r io.Reader }

func (y *yieldingReader) Read(p []byte) (int, error) {
	runtime.Gosched()
	return y.r.Read(p[:min(len(p), 64<<10)])
}

// discardWriter is a ResponseWriter that counts and drops the body; its
// ReadFrom copies with a 256 KiB buffer (the proxy's sockets use sendfile).
type discardWriter struct {
	h    http.Header
	code int
	n    int64
}

var discardBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func newDiscardWriter() *discardWriter { return &discardWriter{h: http.Header{}} }

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(p))
	return len(p), nil
}

func (w *discardWriter) ReadFrom(r io.Reader) (int64, error) {
	w.WriteHeader(http.StatusOK)
	bp := discardBufs.Get().(*[]byte)
	defer discardBufs.Put(bp)
	var n int64
	for {
		k, err := r.Read(*bp)
		n += int64(k)
		if err == io.EOF {
			w.n += n
			return n, nil
		}
		if err != nil {
			w.n += n
			return n, err
		}
	}
}

// newBenchMirror returns a mirror of u on a filesystem store in root.
func newBenchMirror(b *testing.B, root string, u *benchUpstream, ttl time.Duration) *mirror.Mirror {
	b.Helper()
	store, err := storage.New(filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100}), storage.Options{LocalRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	opts := mirror.Options{FillTimeout: time.Minute}
	if ttl > 0 {
		opts.TagTTL = func(string) time.Duration { return ttl }
	}
	m, err := mirror.New(store, []mirror.Registry{{Host: benchHost, Client: u}}, opts)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// benchServe runs one GET of path through h and checks status and length.
func benchServe(h http.Handler, path string, accept string, wantLen int) error {
	req, err := http.NewRequest(http.MethodGet, "http://proxy.test"+path, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	w := newDiscardWriter()
	func() {
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler { //nolint:errorlint // a panic value, not a returned error: only the sentinel itself is expected
				panic(p)
			}
		}()
		h.ServeHTTP(w, req)
	}()
	if w.code != http.StatusOK || w.n != int64(wantLen) {
		return fmt.Errorf("GET %s: status %d, %d bytes; want 200, %d", path, w.code, w.n, wantLen)
	}
	return nil
}

// BenchmarkFillFanOut measures one cold blob GET by N clients at once: one
// fill from the upstream, spooled and hashed, that every reader streams as
// it grows (the late ones may find it verified and wait for the commit).
// Each iteration uses a fresh cache; the fill's commit (fsync) after the
// last reader finished is not timed. Bytes/s counts every reader's bytes.
func BenchmarkFillFanOut(b *testing.B) {
	const size = 4 << 20
	u := newBenchUpstream(size)
	path := "/v2/" + benchNS + "/" + benchRepo + "/blobs/" + u.bdigest.String()
	base := b.TempDir()
	for _, readers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			b.SetBytes(int64(size * readers))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root, err := os.MkdirTemp(base, "fill-")
				if err != nil {
					b.Fatal(err)
				}
				m := newBenchMirror(b, root, u, 0)
				gate := make(chan struct{})
				errs := make(chan error, readers)
				var wg sync.WaitGroup
				for range readers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-gate
						errs <- benchServe(m, path, "", size)
					}()
				}
				b.StartTimer()
				close(gate)
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if err := m.Drain(ctx); err != nil {
					b.Fatal(err)
				}
				cancel()
				_ = os.RemoveAll(root)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCachedManifestGET measures GETs of a cached manifest, run in
// parallel (GOMAXPROCS goroutines): by tag inside its TTL (the manifest
// cache on: no upstream request), by digest, by tag with the manifest
// cache off (one in-memory upstream HEAD per GET, no network), and by tag
// through the access log middleware as the proxy serves it.
func BenchmarkCachedManifestGET(b *testing.B) {
	u := newBenchUpstream(1 << 10)
	byTag := "/v2/" + benchNS + "/" + benchRepo + "/manifests/" + benchTag
	byDigest := "/v2/" + benchNS + "/" + benchRepo + "/manifests/" + u.mdigest.String()
	const accept = "application/vnd.oci.image.manifest.v1+json"
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	for _, c := range []struct {
		name   string
		path   string
		ttl    time.Duration
		logged bool
	}{
		{"tag", byTag, time.Hour, false},
		{"digest", byDigest, time.Hour, false},
		{"tag-revalidate", byTag, 0, false},
		{"tag-accesslog", byTag, time.Hour, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var h http.Handler = newBenchMirror(b, b.TempDir(), u, c.ttl)
			if c.logged {
				h = logx.AccessLog(quiet, h)
			}
			if err := benchServe(h, byTag, accept, len(u.manifest)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := benchServe(h, c.path, accept, len(u.manifest)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
