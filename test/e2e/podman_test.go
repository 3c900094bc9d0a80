//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// podman runs podman as root without systemd, with its own storage
// (vfs) under a temp dir and only the given registries.conf.
type podman struct {
	t      *testing.T
	dir    string
	conf   string
	policy string

	env      []string // added to every command's environment (HTTPS_PROXY)
	pullArgs []string // added to every pull (--cert-dir DIR)
}

func newPodman(t *testing.T, conf, policy string) *podman {
	dir := t.TempDir()
	return &podman{t: t, dir: dir, conf: conf, policy: policy}
}

func (p *podman) run(args ...string) string {
	p.t.Helper()
	global := []string{
		"--root", filepath.Join(p.dir, "root"),
		"--runroot", filepath.Join(p.dir, "runroot"),
		"--tmpdir", filepath.Join(p.dir, "tmp"),
		"--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
	}
	containersConf := writeFile(p.t, p.dir, "containers.conf", "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n")
	storageConf := writeFile(p.t, p.dir, "storage.conf", fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n",
		filepath.Join(p.dir, "runroot"), filepath.Join(p.dir, "root")))
	env := []string{
		"CONTAINERS_REGISTRIES_CONF=" + p.conf,
		"CONTAINERS_CONF=" + containersConf,
		"CONTAINERS_STORAGE_CONF=" + storageConf,
		"XDG_RUNTIME_DIR=" + filepath.Join(p.dir, "xdg"),
	}
	env = append(env, p.env...)
	return run(p.t, env, "podman", append(global, args...)...)
}

// pull pulls ref and checks what podman stored against img.
func (p *podman) pull(ref string, img testreg.Image) {
	p.t.Helper()
	p.pullTop(ref, img, img.ManifestDigest.String())
}

// pullTop pulls ref, whose tag names top (img's manifest or an index
// holding it), and checks what podman stored against img.
func (p *podman) pullTop(ref string, img testreg.Image, top string) {
	p.t.Helper()
	p.run(append(append([]string{"pull", "--signature-policy", p.policy}, p.pullArgs...), ref)...)
	out := p.run("image", "inspect", ref)
	var inspect []struct {
		Digest      string
		RepoDigests []string
		RootFS      struct{ Layers []string }
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
		p.t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	in := inspect[0]
	if in.Digest != top {
		p.t.Errorf("podman image digest %s, want the pushed %s", in.Digest, top)
	}
	for _, d := range []string{top, img.ManifestDigest.String()} {
		want := ref[:strings.LastIndex(ref, ":")] + "@" + d
		found := false
		for _, rd := range in.RepoDigests {
			found = found || rd == want
		}
		if !found {
			p.t.Errorf("podman RepoDigests %v, want %s among them", in.RepoDigests, want)
		}
	}
	if want := diffIDs(p.t, img); !equal(in.RootFS.Layers, want) {
		p.t.Errorf("podman RootFS layers %v, want %v", in.RootFS.Layers, want)
	}
}

// TestPodmanMirror: podman pulls an OCI image and a Docker manifest list
// through the registries.conf mirror; second pulls into empty storage
// cause no upstream GETs. An image of the token-auth upstream pulls
// through its mirror alias.
func TestPodmanMirror(t *testing.T) {
	t.Parallel()
	requireTools(t, "podman")
	u := startUpstreams(t)
	p := startProxy(t, u)
	img := smallImage(t, u.Hub, "library/e2e-podman", "v1")
	list := u.Hub.PushIndexMediaType(t, "library/e2e-podman", "list", testreg.MediaTypeDockerManifestList)
	listAMD64 := list.Images[0]
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	ref := "docker.io/library/e2e-podman:v1"
	listRef := "docker.io/library/e2e-podman:list"

	pm := newPodman(t, conf, policy)
	pm.pull(ref, img)
	pm.pullTop(listRef, listAMD64, list.ManifestDigest.String())
	if t.Failed() {
		t.FailNow()
	}

	u.resetCounts()
	mark := p.Mark()
	pm = newPodman(t, conf, policy)
	pm.pull(ref, img)
	pm.pullTop(listRef, listAMD64, list.ManifestDigest.String())
	requireNoUpstreamGets(t, u.Hub, "second pulls")
	p.requireBlobHits(t, mark, imageBlobs(img)...)
	p.requireBlobHits(t, mark, imageBlobs(listAMD64)...)

	// The token-auth upstream through its port-free path alias.
	priv := smallImage(t, u.Priv, "team/e2e-podman", "v3")
	newPodman(t, conf, policy).pull(u.PrivHost+"/team/e2e-podman:v3", priv)
	if u.Priv.Count("", testreg.KindToken) == 0 {
		t.Errorf("the proxy never asked the token server: %v", u.Priv.Requests())
	}
}
