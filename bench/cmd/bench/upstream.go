package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
	"github.com/opencontainers/go-digest"
)

// Media types of the pushed image.
const (
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// blob is one pushed blob.
type blob struct {
	digest string
	size   int64
}

// image is what was pushed to the upstream: a manifest (tagged tag) with
// a config and its layers.
type image struct {
	label          string // "256 MiB layer", "20 × 4 MiB layers"
	repo, tag      string
	config         blob
	layers         []blob
	manifest       []byte
	manifestDigest string
}

// blobBytes is what one client fetches besides the manifest: the config
// and every layer.
func (im *image) blobBytes() int64 {
	n := im.config.size
	for _, l := range im.layers {
		n += l.size
	}
	return n
}

// blobs returns the config and the layers, in pull order.
func (im *image) blobs() []blob { return append([]blob{im.config}, im.layers...) }

// registryConfig is distribution 2.8's configuration: plain HTTP on
// loopback (startRegistry adds http.tls for the TLS instance), filesystem
// storage, no auth, quiet logs.
const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:%d
health:
  storagedriver:
    enabled: false
%s`

// startRegistry starts Debian's docker-registry as the upstream and
// returns its base URL. With pki it is a second instance that serves TLS
// with pki's server certificate (http.tls.certificate/key; h2 and
// HTTP/1.1 by ALPN, the 2.8 default) on the same storage directory as the
// plain-HTTP one, so both serve the pushed images.
func startRegistry(ctx context.Context, e *env, bin string, pki *testPKI) (*proc, string, error) {
	name := "docker-registry"
	if pki != nil {
		name = "docker-registry-tls"
	}
	return startDistribution(ctx, e, bin, name, filepath.Join(e.root, "upstream"), pki, "")
}

// upstreamData is the upstream's storage root (filesystem driver).
func (e *env) upstreamData() string { return filepath.Join(e.root, "upstream", "data") }

// startDistribution starts docker-registry named name with its storage
// in dir/data and its configuration and log in dir. With remote it runs in
// pull-through proxy mode (proxy.remoteurl), the peer.
func startDistribution(ctx context.Context, e *env, bin, name, dir string, pki *testPKI, remote string) (*proc, string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, "", err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	scheme, proxy := "http", ""
	if remote != "" {
		proxy = fmt.Sprintf("proxy:\n  remoteurl: %s\n", remote)
	}
	cfgText := fmt.Sprintf(registryConfig, filepath.Join(dir, "data"), port, proxy)
	if pki != nil {
		scheme = "https"
		addr := fmt.Sprintf("  addr: 127.0.0.1:%d\n", port)
		cfgText = strings.Replace(cfgText, addr, addr+fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", pki.certFile, pki.keyFile), 1)
	}
	cfg := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		return nil, "", err
	}
	p, err := e.start(name, filepath.Join(dir, name+".log"), bin, "serve", cfg)
	if err != nil {
		return nil, "", err
	}
	base := scheme + "://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTPS(ctx, p, base+"/v2/", http.StatusOK, pki); err != nil {
		_ = e.stop(p)
		return nil, "", err
	}
	return p, base, nil
}

// distBlobPath is where distribution's filesystem driver keeps blob d
// under root.
func distBlobPath(root, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(root, "docker", "registry", "v2", "blobs", alg, hex[:2], hex, "data")
}

// pusher talks the registry's push API.
type pusher struct {
	base string
	c    *http.Client
}

// pushImage pushes an image of random (incompressible) layers of the
// given sizes, each streamed in PATCH chunks and hashed on the way, a
// config and an OCI manifest tagged tag.
func pushImage(ctx context.Context, base, label, repo, tag string, sizes []int64) (*image, error) {
	p := &pusher{base: base, c: &http.Client{Transport: &http.Transport{Proxy: nil}}}
	img := &image{label: label, repo: repo, tag: tag}
	var diffIDs []string
	for i, size := range sizes {
		var seed [32]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return nil, err
		}
		h := sha256.New()
		src := io.TeeReader(io.LimitReader(mrand.NewChaCha8(seed), size), h)
		d, err := p.pushStream(ctx, repo, src, size, h)
		if err != nil {
			return nil, fmt.Errorf("pushing layer %d of %s: %w", i+1, repo, err)
		}
		img.layers = append(img.layers, blob{d, size})
		diffIDs = append(diffIDs, d)
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	img.config = blob{digest.FromBytes(cfg).String(), int64(len(cfg))}
	if err := p.pushSmall(ctx, repo, cfg, img.config.digest); err != nil {
		return nil, fmt.Errorf("pushing config of %s: %w", repo, err)
	}
	var layers []any
	for _, l := range img.layers {
		layers = append(layers, map[string]any{"mediaType": mediaTypeLayer, "digest": l.digest, "size": l.size})
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        map[string]any{"mediaType": mediaTypeConfig, "digest": img.config.digest, "size": len(cfg)},
		"layers":        layers,
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", mediaTypeManifest)
	if _, err := p.do(req, http.StatusCreated); err != nil {
		return nil, fmt.Errorf("pushing manifest of %s: %w", repo, err)
	}
	img.manifest, img.manifestDigest = man, digest.FromBytes(man).String()
	return img, nil
}

// chunkSize is the size of one PATCH of a streamed upload.
const chunkSize = 32 << 20

// pushStream uploads size bytes from src: POST, PATCH per chunk (each
// request body streamed from src), PUT ?digest=. h hashes what src gave.
func (p *pusher) pushStream(ctx context.Context, repo string, src io.Reader, size int64, h interface{ Sum([]byte) []byte }) (string, error) {
	loc, err := p.startUpload(ctx, repo)
	if err != nil {
		return "", err
	}
	for off := int64(0); off < size; {
		n := min(int64(chunkSize), size-off)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, loc, io.NopCloser(io.LimitReader(src, n)))
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, err := p.do(req, http.StatusAccepted)
		if err != nil {
			return "", fmt.Errorf("PATCH at %d: %w", off, err)
		}
		if loc, err = p.location(resp); err != nil {
			return "", err
		}
		off += n
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, d), http.NoBody)
	if _, err := p.do(req, http.StatusCreated); err != nil {
		return "", fmt.Errorf("PUT ?digest=: %w", err)
	}
	return d, nil
}

// pushSmall uploads data: POST then monolithic PUT ?digest=.
func (p *pusher) pushSmall(ctx context.Context, repo string, data []byte, d string) error {
	loc, err := p.startUpload(ctx, repo)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, d), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	_, err = p.do(req, http.StatusCreated)
	return err
}

func (p *pusher) startUpload(ctx context.Context, repo string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/v2/"+repo+"/blobs/uploads/", http.NoBody)
	resp, err := p.do(req, http.StatusAccepted)
	if err != nil {
		return "", fmt.Errorf("POST upload: %w", err)
	}
	return p.location(resp)
}

func (p *pusher) location(resp *http.Response) (string, error) {
	u, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("upload response without Location: %w", err)
	}
	return u.String(), nil
}

// do sends req and checks the status; the body is drained and closed.
func (p *pusher) do(req *http.Request, want int) (*http.Response, error) {
	resp, err := p.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, resp.StatusCode, want, bytes.TrimSpace(body))
	}
	return resp, nil
}

func withDigest(loc, d string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	q := u.Query()
	q.Set("digest", d)
	u.RawQuery = q.Encode()
	return u.String()
}
