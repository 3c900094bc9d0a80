package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// warmer pulls images through a proxy's mirror paths, reading every byte
// so that the proxy fills its cache.
type warmer struct {
	base       string // "http://127.0.0.1:3128"
	client     *http.Client
	user, pass string
	// namespace maps a canonical registry host to its mirror path prefix.
	namespace func(host string) string
	wants     []platform
	all       bool
	jobs      int
}

// warmResult is what warming one image did.
type warmResult struct {
	Image     string
	Platforms []string
	Blobs     int
	Bytes     int64
	Fetched   int // blobs the proxy fetched from upstream (X-Cache other than HIT)
	Cached    int // blobs the proxy already had
	Dur       time.Duration
	Err       error
}

// blobDescriptor is a config or layer of a manifest.
type blobDescriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls"`
}

// proxyError is a non-2xx answer of the proxy, with its OCI error.
type proxyError struct {
	What    string // "manifest latest", "blob sha256:…"
	Status  int
	Code    string
	Message string
}

func (e *proxyError) Error() string {
	s := fmt.Sprintf("%s: %d %s", e.What, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Status == http.StatusUnauthorized {
		s += " (authenticate to the proxy with --user)"
	}
	return s
}

// short is the summary table's reason.
func (e *proxyError) short() string {
	if e.Code != "" {
		return e.Code
	}
	return fmt.Sprint(e.Status)
}

func readProxyError(what string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, oci.MaxSmallBody))
	pe := &proxyError{What: what, Status: resp.StatusCode}
	var env struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		pe.Code, pe.Message = env.Errors[0].Code, env.Errors[0].Message
	} else if s := strings.TrimSpace(string(body)); s != "" && len(s) < 200 {
		pe.Message = s
	}
	return pe
}

func (w *warmer) url(ref imageRef, kind, name string) string {
	return fmt.Sprintf("%s/v2/%s/%s/%s/%s", w.base, w.namespace(ref.Host), ref.Repo, kind, name)
}

func (w *warmer) get(ctx context.Context, u, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if w.user != "" {
		req.SetBasicAuth(w.user, w.pass)
	}
	req.Header.Set("User-Agent", "container-registry-proxy-warm/"+Version)
	return w.client.Do(req)
}

// manifest fetches a manifest and verifies it against want (a digest
// reference) or the Docker-Content-Digest the proxy sent.
func (w *warmer) manifest(ctx context.Context, ref imageRef, reference string, want digest.Digest) ([]byte, string, error) {
	what := "manifest " + reference
	resp, err := w.get(ctx, w.url(ref, "manifests", reference), oci.ManifestAccept)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", readProxyError(what, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	if len(body) > oci.MaxManifestSize {
		return nil, "", fmt.Errorf("%s: larger than %d bytes", what, oci.MaxManifestSize)
	}
	if want == "" {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
			if d, err := digest.Parse(h); err == nil {
				want = d
			}
		}
	}
	if want != "" && want.Algorithm().Available() && want.Algorithm().FromBytes(body) != want {
		return nil, "", fmt.Errorf("%s: content does not match %s", what, want)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "" || mt == "application/json" || mt == oci.MediaTypeOctetStream {
		mt = oci.ManifestMediaType(body)
	}
	return body, mt, nil
}

// imageBlobs returns the config and layers of an image manifest.
func imageBlobs(body []byte, mediaType string) ([]blobDescriptor, error) {
	var m struct {
		Config   *blobDescriptor  `json:"config"`
		Layers   []blobDescriptor `json:"layers"`
		FSLayers []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest (%s): %w", mediaType, err)
	}
	var out []blobDescriptor
	if m.Config != nil && m.Config.Digest != "" {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		// Foreign (non-distributable) layers are not served by registries.
		if len(l.URLs) > 0 && (strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable")) {
			continue
		}
		out = append(out, l)
	}
	for _, l := range m.FSLayers { // Docker schema 1
		out = append(out, blobDescriptor{Digest: l.BlobSum, Size: -1})
	}
	for _, b := range out {
		if err := b.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest (%s): blob %q: %w", mediaType, b.Digest, err)
		}
	}
	return out, nil
}

// plan is what an image consists of: the platforms chosen and the blobs
// they need (each once).
type plan struct {
	platforms []string
	blobs     []blobDescriptor
	missing   []platform
	// configOnly names a single-platform image's config, whose platform
	// is read while it streams.
	configOnly digest.Digest
}

// resolve fetches the image's manifests and chooses what to warm.
func (w *warmer) resolve(ctx context.Context, ref imageRef) (plan, error) {
	var p plan
	body, mt, err := w.manifest(ctx, ref, ref.reference(), ref.Digest)
	if err != nil {
		return p, err
	}
	seen := map[digest.Digest]bool{}
	add := func(bs []blobDescriptor) {
		for _, b := range bs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				p.blobs = append(p.blobs, b)
			}
		}
	}
	if !oci.IsIndex(mt) {
		bs, err := imageBlobs(body, mt)
		if err != nil {
			return p, err
		}
		if mt != oci.MediaTypeDockerV1 && mt != oci.MediaTypeDockerV1Signed && len(bs) > 0 {
			p.configOnly = bs[0].Digest
		}
		add(bs)
		return p, nil
	}
	var idx struct {
		Manifests []childDescriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		return p, fmt.Errorf("index %s: %w", ref.reference(), err)
	}
	picked, missing := selectChildren(idx.Manifests, w.wants, w.all)
	p.missing = missing
	if len(picked) == 0 {
		return p, fmt.Errorf("no manifest for %s in the index (it has %s)", joinPlatforms(missing), platformNames(idx.Manifests))
	}
	for _, c := range picked {
		cb, cmt, err := w.manifest(ctx, ref, c.Digest.String(), c.Digest)
		if err != nil {
			return p, err
		}
		if oci.IsIndex(cmt) {
			continue // nested indexes are not pulled by clients either
		}
		bs, err := imageBlobs(cb, cmt)
		if err != nil {
			return p, err
		}
		name := "unknown"
		if pl, ok := c.platform(); ok {
			name = pl.String()
		}
		p.platforms = append(p.platforms, name)
		add(bs)
	}
	return p, nil
}

func joinPlatforms(ps []platform) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// progressFunc is told about every n bytes of blob received.
type progressFunc func(n int64)

// blob reads one blob to the end, verifying size and digest while it
// streams; it reports whether the proxy had it cached. When keep is set,
// the (small) body is returned too.
func (w *warmer) blob(ctx context.Context, ref imageRef, b blobDescriptor, progress progressFunc, keep bool) (cached bool, body []byte, err error) {
	what := "blob " + b.Digest.String()
	resp, err := w.get(ctx, w.url(ref, "blobs", b.Digest.String()), "")
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, nil, readProxyError(what, resp)
	}
	if !b.Digest.Algorithm().Available() {
		return false, nil, fmt.Errorf("%s: unsupported digest algorithm", what)
	}
	dg := b.Digest.Algorithm().Digester()
	var sink io.Writer = dg.Hash()
	var kept *strings.Builder
	if keep && b.Size >= 0 && b.Size <= oci.MaxManifestSize {
		kept = &strings.Builder{}
		sink = io.MultiWriter(sink, kept)
	}
	n, err := io.Copy(sink, progressReader{resp.Body, progress})
	if err != nil {
		return false, nil, fmt.Errorf("%s: after %d bytes: %w", what, n, err)
	}
	if b.Size >= 0 && n != b.Size {
		return false, nil, fmt.Errorf("%s: got %d bytes, want %d", what, n, b.Size)
	}
	if got := dg.Digest(); got != b.Digest {
		return false, nil, fmt.Errorf("%s: content does not match (got %s)", what, got)
	}
	if kept != nil {
		body = []byte(kept.String())
	}
	return resp.Header.Get("X-Cache") == "HIT", body, nil
}

type progressReader struct {
	r io.Reader
	f progressFunc
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 && p.f != nil {
		p.f(int64(n))
	}
	return n, err
}

// configPlatform reads os/architecture/variant from an image config.
func configPlatform(body []byte) string {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if json.Unmarshal(body, &c) != nil || c.OS == "" || c.Architecture == "" {
		return ""
	}
	return platform{OS: c.OS, Arch: c.Architecture, Variant: c.Variant}.String()
}

// warm warms one image. start is told the total size once the manifests
// are known; progress about every chunk of blob bytes.
func (w *warmer) warm(ctx context.Context, ref imageRef, start func(total int64), progress progressFunc) (res warmResult) {
	began := time.Now()
	res.Image = ref.String()
	defer func() { res.Dur = time.Since(began) }()
	p, err := w.resolve(ctx, ref)
	if err != nil {
		res.Err = err
		return res
	}
	res.Platforms = p.platforms
	var total int64
	for _, b := range p.blobs {
		total += max(b.Size, 0)
	}
	if start != nil {
		start(total)
	}
	var (
		mu       sync.Mutex
		firstErr error
		fetched  atomic.Int64
		cached   atomic.Int64
		bytes    atomic.Int64
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, max(w.jobs, 1))
	for _, b := range p.blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			hit, body, err := w.blob(ctx, ref, b, progress, b.Digest == p.configOnly)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
				return
			}
			if hit {
				cached.Add(1)
			} else {
				fetched.Add(1)
			}
			bytes.Add(max(b.Size, 0))
			if body != nil {
				if pl := configPlatform(body); pl != "" {
					mu.Lock()
					res.Platforms = []string{pl}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.Blobs, res.Bytes = len(p.blobs), bytes.Load()
	res.Fetched, res.Cached = int(fetched.Load()), int(cached.Load())
	switch {
	case firstErr != nil:
		res.Err = firstErr
	case ctx.Err() != nil:
		res.Err = ctx.Err()
	case len(p.missing) > 0:
		res.Err = fmt.Errorf("no manifest for %s in the index (warmed %s)", joinPlatforms(p.missing), strings.Join(p.platforms, ", "))
	}
	return res
}
