//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// clientTimeout bounds one client command.
const clientTimeout = 2 * time.Minute

// deadLocation is where clients would fall back when the mirror fails: an
// unused loopback port, so no request ever leaves the machine.
const deadLocation = "127.0.0.1:9"

// run executes a client command with a bound and returns its combined
// output; a failure (or the bound passing) fails the test with the output.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// tryRun is run without failing the test.
func tryRun(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.WaitDelay = 5 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", clientTimeout, err)
	}
	t.Logf("$ %s %s (%s)", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return buf.String(), err
}

// cleanEnv is the environment without proxy variables or registry
// configuration overrides a developer may have set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
			"CONTAINERS_REGISTRIES_CONF", "REGISTRIES_CONFIG_PATH", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF",
			"DOCKER_CONFIG", "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// registriesConf writes a registries.conf for containers/image clients
// (skopeo, podman): docker.io is served by the proxy's mirror path
// /docker.io and the token-auth upstream by its port-free alias
// /registry.test_<port>; their primary locations are a dead loopback port.
func registriesConf(t *testing.T, p *proxy, u *upstreams) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "registries.conf", fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = "docker.io"
location = %[1]q
insecure = true

[[registry.mirror]]
location = "%[2]s/docker.io"
insecure = true

[[registry]]
prefix = %[3]q
location = %[1]q
insecure = true

[[registry.mirror]]
location = "%[2]s/%[4]s"
insecure = true
`, deadLocation, p.Addr, u.PrivHost, u.PrivNS))
}

// policyJSON writes a signature policy accepting anything, so the tests do
// not depend on the machine's /etc/containers/policy.json.
func policyJSON(t *testing.T) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`)
}

// ociLayout reads an OCI image layout directory.
type ociLayout struct {
	t   *testing.T
	dir string
}

// index returns the layout's index.json.
func (l ociLayout) index() ocispec.Index {
	l.t.Helper()
	var idx ocispec.Index
	l.readJSON(filepath.Join(l.dir, "index.json"), &idx)
	return idx
}

// top returns the descriptor in index.json for tag (matching the ref.name
// annotation exactly or as a ":tag" suffix), or the only one.
func (l ociLayout) top(tag string) ocispec.Descriptor {
	l.t.Helper()
	idx := l.index()
	for _, d := range idx.Manifests {
		n := d.Annotations[ocispec.AnnotationRefName]
		if tag != "" && (n == tag || strings.HasSuffix(n, ":"+tag)) {
			return d
		}
	}
	if len(idx.Manifests) == 1 {
		return idx.Manifests[0]
	}
	l.t.Fatalf("OCI layout %s: no manifest for tag %q in %+v", l.dir, tag, idx.Manifests)
	return ocispec.Descriptor{}
}

// blob returns a blob's bytes after checking they hash to d.
func (l ociLayout) blob(d string) []byte {
	l.t.Helper()
	alg, hexd, ok := strings.Cut(d, ":")
	if !ok || alg != "sha256" {
		l.t.Fatalf("unexpected digest %q", d)
	}
	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", alg, hexd))
	if err != nil {
		l.t.Fatalf("OCI layout %s: %v", l.dir, err)
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != d {
		l.t.Fatalf("OCI layout %s: blob %s hashes to %s", l.dir, d, got)
	}
	return b
}

// manifest returns the image manifest stored under d.
func (l ociLayout) manifest(d string) ocispec.Manifest {
	l.t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(l.blob(d), &m); err != nil {
		l.t.Fatalf("manifest %s: %v", d, err)
	}
	return m
}

func (l ociLayout) readJSON(path string, v any) {
	l.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		l.t.Fatalf("%s: %v", path, err)
	}
}

// requireImage checks that the layout holds img under manifest digest d
// with exactly the pushed config and layers, every blob intact.
func (l ociLayout) requireImage(d string, img testreg.Image) {
	l.t.Helper()
	if d != img.ManifestDigest.String() {
		l.t.Errorf("manifest digest %s, want the pushed %s", d, img.ManifestDigest)
	}
	m := l.manifest(d)
	if got := m.Config.Digest.String(); got != img.Config.Digest.String() {
		l.t.Errorf("config digest %s, want %s", got, img.Config.Digest)
	}
	l.blob(m.Config.Digest.String())
	if got, want := digestsOf(m.Layers), blobDigests(img.Layers); !equal(got, want) {
		l.t.Errorf("layers %v, want %v", got, want)
	}
	for _, ld := range m.Layers {
		l.blob(ld.Digest.String())
	}
}

func digestsOf(ds []ocispec.Descriptor) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Digest.String()
	}
	return out
}

func blobDigests(bs []testreg.Blob) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Digest.String()
	}
	return out
}

// imageBlobs lists the config and layer digests of img.
func imageBlobs(img testreg.Image) []string {
	return append([]string{img.Config.Digest.String()}, blobDigests(img.Layers)...)
}

// diffIDs lists the uncompressed layer digests of the pushed layers.
func diffIDs(t *testing.T, img testreg.Image) []string {
	out := make([]string, len(img.Layers))
	for i, b := range img.Layers {
		out[i] = testreg.DiffID(t, b.Bytes).String()
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// smallImage pushes an image of two random layers (1 and 2 MiB) to reg.
func smallImage(t *testing.T, reg *testreg.Registry, repo, tag string) testreg.Image {
	t.Helper()
	return reg.PushImage(t, repo, tag, testreg.RandomLayer(t, 1<<20), testreg.RandomLayer(t, 2<<20))
}
