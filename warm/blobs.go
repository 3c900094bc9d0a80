package warm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/gmarcy/container-registry-proxy/oci"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// blobsRead is what reading an image's blobs found.
type blobsRead struct {
	bytes           int64
	fetched, cached int
	// platform is read from a single-platform image's config ("" when
	// not known).
	platform string
}

// readBlobs reads the plan's blobs, Options.Jobs at once; the first
// failure stops the others.
func (w *Warmer) readBlobs(ctx context.Context, repo string, p plan) (blobsRead, error) {
	var (
		got             blobsRead
		fetched, cached atomic.Int64
		total           atomic.Int64
		config          []byte // written by one goroutine, read after Wait
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.opts.Jobs)
	for _, b := range p.blobs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			keep := b.Digest == p.config
			hit, body, err := w.readBlob(gctx, repo, b, keep)
			if err != nil {
				return err
			}
			if hit {
				cached.Add(1)
			} else {
				fetched.Add(1)
			}
			total.Add(max(b.Size, 0))
			if keep {
				config = body
			}
			return nil
		})
	}
	err := g.Wait()
	got.bytes, got.fetched, got.cached = total.Load(), int(fetched.Load()), int(cached.Load())
	got.platform = configPlatform(config)
	return got, err
}

// readBlob reads one blob to the end, verifying size and digest while it
// streams, and reports whether the proxy had it cached. With keep the
// (small) body is returned too.
func (w *Warmer) readBlob(ctx context.Context, repo string, b v1.Descriptor, keep bool) (hit bool, body []byte, err error) {
	what := "blob " + b.Digest.String()
	if !b.Digest.Algorithm().Available() {
		return false, nil, fmt.Errorf("%s: %w: unsupported digest algorithm", what, ErrInvalidManifest)
	}
	resp, err := w.reg.Get(ctx, repo, "blobs/"+b.Digest.String(), nil)
	if err != nil {
		return false, nil, &FetchError{What: what, Proxy: w.proxy, Err: err}
	}
	defer resp.Body.Close()
	dg := b.Digest.Algorithm().Digester()
	var sink io.Writer = dg.Hash()
	var kept *bytes.Buffer
	if keep && b.Size >= 0 && b.Size <= oci.MaxManifestSize {
		kept = &bytes.Buffer{}
		sink = io.MultiWriter(sink, kept)
	}
	n, err := io.Copy(sink, progressReader{r: resp.Body, p: w.opts.Progress})
	if err != nil {
		return false, nil, &FetchError{What: fmt.Sprintf("%s: after %d bytes", what, n), Proxy: w.proxy, Err: err}
	}
	if b.Size >= 0 && n != b.Size {
		return false, nil, fmt.Errorf("%s: %w: got %d bytes, want %d", what, ErrSizeMismatch, n, b.Size)
	}
	if got := dg.Digest(); got != b.Digest {
		return false, nil, fmt.Errorf("%s: %w (got %s)", what, ErrDigestMismatch, got)
	}
	if kept != nil {
		body = kept.Bytes()
	}
	return resp.Header.Get("X-Cache") == "HIT", body, nil
}

// progressReader tells p about every chunk read.
type progressReader struct {
	r io.Reader
	p Progress
}

// Read implements io.Reader.
func (pr progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 && pr.p != nil {
		pr.p.Add(int64(n))
	}
	return n, err
}

// configPlatform reads os/architecture/variant from an image config, ""
// when it has none.
func configPlatform(body []byte) string {
	var c v1.Image
	if len(body) == 0 || json.Unmarshal(body, &c) != nil || c.OS == "" || c.Architecture == "" {
		return ""
	}
	return formatPlatform(c.Platform)
}
