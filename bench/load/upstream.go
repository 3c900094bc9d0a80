package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage driver registration
)

// upstream is distribution v3 in this process, on a loopback port, with
// filesystem storage: the registry the proxy pulls from. It counts the
// requests it serves by method and kind (manifest, blob, other).
type upstream struct {
	url string
	srv *http.Server
	ln  net.Listener

	mu     sync.Mutex
	counts map[string]int64 // "GET blob", "HEAD manifest", …
}

// startUpstreamAt starts the registry with its storage under root,
// listening on listen (host:port; port 0 picks one).
func startUpstreamAt(root, listen string) (*upstream, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": root},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
			"redirect":    configuration.Parameters{"disable": true},
			"cache":       configuration.Parameters{"blobdescriptor": "inmemory"},
		},
	}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	ctx := quietContext{Context: context.Background(), entry: quietLogger()}
	app := handlers.NewApp(ctx, cfg)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	u := &upstream{url: "http://" + ln.Addr().String(), ln: ln, counts: map[string]int64{}}
	u.srv = &http.Server{
		Handler:           u.counting(app),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

// close stops the registry and its connections.
func (u *upstream) close() { _ = u.srv.Close() }

var kindRE = regexp.MustCompile(`^/v2/.+/(manifests|blobs)/([^/]+)$`)

// counting counts each request before h serves it.
func (u *upstream) counting(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := "other"
		if m := kindRE.FindStringSubmatch(r.URL.Path); m != nil && m[2] != "uploads" {
			kind = map[string]string{"manifests": "manifest", "blobs": "blob"}[m[1]]
		}
		u.mu.Lock()
		u.counts[r.Method+" "+kind]++
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// snapshot returns the counts so far.
func (u *upstream) snapshot() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int64, len(u.counts))
	for k, v := range u.counts {
		out[k] = v
	}
	return out
}

// quietContext answers distribution's logger lookup with a logger that
// discards, so that its per-request log lines stay out of the output
// without touching logrus' standard logger. distribution offers no
// exported way (the key type is internal): the match is by reflection, as
// in internal/testreg.
type quietContext struct {
	context.Context
	entry *logrus.Entry
}

// Value implements context.Context.
func (c quietContext) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.Name() == "loggerKey" && t.PkgPath() == "github.com/distribution/distribution/v3/internal/dcontext" {
		return c.entry
	}
	return c.Context.Value(key)
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// Media types of the pushed images.
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

// image is one pushed image: a manifest tagged tag, a config and layers.
type image struct {
	repo, tag      string
	config         blob
	layers         []blob
	manifest       []byte
	manifestDigest string
}

// push pushes an image of random (incompressible) layers of the given
// sizes with a config and an OCI manifest tagged tag.
func (u *upstream) push(ctx context.Context, repo, tag string, sizes []int64) (*image, error) {
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Minute}
	defer c.CloseIdleConnections()
	img := &image{repo: repo, tag: tag}
	var diffIDs []string
	for _, size := range sizes {
		b := make([]byte, size)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		d := digest.FromBytes(b).String()
		if err := u.pushBlob(ctx, c, repo, d, b); err != nil {
			return nil, err
		}
		img.layers = append(img.layers, blob{d, size})
		diffIDs = append(diffIDs, d)
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	img.config = blob{digest.FromBytes(cfg).String(), int64(len(cfg))}
	if err := u.pushBlob(ctx, c, repo, img.config.digest, cfg); err != nil {
		return nil, err
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
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u.url+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", mediaTypeManifest)
	if err := expect(c, req, http.StatusCreated); err != nil {
		return nil, fmt.Errorf("pushing the manifest of %s: %w", repo, err)
	}
	img.manifest, img.manifestDigest = man, digest.FromBytes(man).String()
	return img, nil
}

// pushBlob uploads b (digest d) to repo: POST, then PUT ?digest=.
func (u *upstream) pushBlob(ctx context.Context, c *http.Client, repo, d string, b []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.url+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		return fmt.Errorf("starting an upload to %s: status %d", repo, resp.StatusCode)
	}
	l, err := req.URL.Parse(loc)
	if err != nil {
		return err
	}
	q := l.Query()
	q.Set("digest", d)
	l.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, l.String(), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	if err := expect(c, req, http.StatusCreated); err != nil {
		return fmt.Errorf("pushing blob %s to %s: %w", d, repo, err)
	}
	return nil
}

// expect sends req and checks the status.
func expect(c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		return errors.New("status " + resp.Status + ": " + string(body))
	}
	return nil
}
