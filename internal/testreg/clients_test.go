package testreg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRealClients pulls pushed images with the real clients installed by
// scripts/install-test-deps.sh (a missing client fails the test): the images must be
// complete enough for them, layers unpackable with matching diff_ids.
func TestRealClients(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short mode")
	}
	gopathBin := filepath.Join(goPath(), "bin")
	base := Options{TLS: true, Auth: AuthToken, Username: "alice", Password: "secret", BlobRedirect: true}
	localhostRealm, ownRealm := base, base
	localhostRealm.RealmHost = "localhost"

	// args builds the client's command line for one pull into dir.
	type args func(reg *Registry, certDir, dir, ref string) []string
	cases := []struct {
		name string
		bin  string
		opts Options
		args args
		env  func(t *testing.T, reg *Registry) []string
	}{
		{name: "skopeo", bin: "skopeo", opts: base, args: func(reg *Registry, certDir, dir, ref string) []string {
			return []string{"copy", "--src-cert-dir", certDir, "--src-creds", "alice:secret", "docker://" + ref, "oci:" + dir + ":x"}
		}},
		{name: "podman", bin: "podman", opts: localhostRealm, args: func(reg *Registry, certDir, dir, ref string) []string {
			return []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs",
				"pull", "--cert-dir", certDir, "--creds", "alice:secret", ref}
		}},
		{name: "crane/realm-localhost", bin: "crane", opts: localhostRealm, args: cranePull, env: craneEnv},
		{name: "crane/realm-on-registry", bin: "crane", opts: ownRealm, args: cranePull, env: craneEnv},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin, err := exec.LookPath(tc.bin)
			if err != nil {
				if bin, err = exec.LookPath(filepath.Join(gopathBin, tc.bin)); err != nil {
					t.Fatalf("%s not installed: run scripts/install-test-deps.sh", tc.bin)
				}
			}
			reg := Start(t, tc.opts)
			img := reg.PushImage(t, "team/app", "v1", RandomLayer(t, 256<<10), LayerFiles(t, map[string][]byte{"etc/motd": []byte("hi\n")}))
			reg.PushImageMediaType(t, "team/app", "docker", MediaTypeDockerManifest, RandomLayer(t, 1024))
			reg.PushIndex(t, "team/multi", "latest")
			certDir := t.TempDir() // containers-style: <dir>/ca.crt
			if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), mustRead(t, reg.CAFile), 0o644); err != nil {
				t.Fatal(err)
			}
			var env []string
			if tc.env != nil {
				env = tc.env(t, reg)
			}
			for _, ref := range []string{reg.Ref("team/app", "v1"), reg.Ref("team/app", img.ManifestDigest.String()),
				reg.Ref("team/app", "docker"), reg.Ref("team/multi", "latest")} {
				cmd := exec.Command(bin, tc.args(reg, certDir, t.TempDir(), ref)...)
				cmd.Env = append(os.Environ(), env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s %s: %v\n%s", tc.bin, strings.Join(cmd.Args[1:], " "), err, out)
				}
			}
			if reg.Count("GET", KindCDN) == 0 || reg.Count("", KindToken) == 0 {
				t.Fatalf("no CDN or token traffic: %+v", reg.Requests())
			}
			t.Logf("%s sent Authorization to the CDN: %v", tc.name, reg.CDNSawAuthorization())
		})
	}
}

func cranePull(reg *Registry, certDir, dir, ref string) []string {
	return []string{"pull", "--format", "oci", ref, filepath.Join(dir, "out")}
}

func craneEnv(t *testing.T, reg *Registry) []string {
	return []string{"SSL_CERT_FILE=" + reg.CAFile, "DOCKER_CONFIG=" + dockerConfig(t, reg.Host, "alice", "secret")}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goPath() string {
	if p := os.Getenv("GOPATH"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go")
}

// dockerConfig writes a config.json with Basic credentials for host.
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64Std(user + ":" + pass)
	cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
