package shim

import (
	"bytes"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// setupTestOptions lists Docker Hub, a plain registry, one with a port and
// a Docker Hub alias that must fold into docker.io.
var setupTestOptions = SetupOptions{DockerHub: true, Registries: []SetupRegistry{
	{Host: "quay.io"}, {Host: "registry.local:5000"}, {Host: "ghcr.io", Namespace: "github"}, {Host: "index.docker.io"},
}}

// setupGet runs one request against h with the given Host.
func setupGet(h http.Handler, method, host, path string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://placeholder"+path, nil)
	r.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestSetupHandlerRouting(t *testing.T) {
	t.Parallel()
	ca := mintTestCA(t)
	h := SetupHandler(ca, setupTestOptions)
	for _, tc := range []struct {
		name, method, host, path string
		status                   int
		ctype                    string
	}{
		{"ca.crt", "GET", "proxy.test:3128", "/ca.crt", 200, "application/x-x509-ca-cert"},
		{"ca.crt HEAD", "HEAD", "proxy.test:3128", "/ca.crt", 200, "application/x-x509-ca-cert"},
		{"systemd", "GET", "proxy.test:3128", "/setup/systemd", 200, "text/x-shellscript; charset=utf-8"},
		{"containerd", "GET", "10.0.0.5:3128", "/setup/containerd", 200, "text/x-shellscript; charset=utf-8"},
		{"registries.conf", "GET", "[fd00::5]:3128", "/setup/registries.conf", 200, "text/plain; charset=utf-8"},
		{"host without port", "GET", "proxy.test", "/setup/systemd", 200, "text/x-shellscript; charset=utf-8"},
		{"unknown setup path", "GET", "proxy.test:3128", "/setup/windows", 404, ""},
		{"setup dir", "GET", "proxy.test:3128", "/setup/", 404, ""},
		{"path below a script", "GET", "proxy.test:3128", "/setup/systemd/x", 404, ""},
		{"POST", "POST", "proxy.test:3128", "/setup/systemd", 405, ""},
		{"empty Host", "GET", "", "/setup/systemd", 400, ""},
		{"Host with user info", "GET", "user:secret@proxy.test:3128", "/setup/systemd", 400, ""},
		{"Host with quote", "GET", `proxy.test";id;"`, "/setup/systemd", 400, ""},
		{"Host with command substitution", "GET", "$(id)", "/setup/containerd", 400, ""},
		{"Host with space", "GET", "proxy test", "/setup/registries.conf", 400, ""},
		{"Host with path", "GET", "proxy.test/x", "/setup/systemd", 400, ""},
		{"port out of range", "GET", "proxy.test:99999", "/setup/systemd", 400, ""},
		{"empty port", "GET", "proxy.test:", "/setup/systemd", 400, ""},
		{"unbracketed ipv6", "GET", "fd00::5", "/setup/systemd", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := setupGet(h, tc.method, tc.host, tc.path)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.ctype != "" && w.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type %q, want %q", w.Header().Get("Content-Type"), tc.ctype)
			}
			if tc.status == 400 && tc.host != "" && strings.Contains(w.Body.String(), tc.host) {
				t.Errorf("error echoes the Host header: %q", w.Body)
			}
		})
	}
	t.Run("ca.crt body", func(t *testing.T) {
		w := setupGet(h, "GET", "proxy.test:3128", "/ca.crt")
		if !bytes.Equal(w.Body.Bytes(), ca.PEM()) || !strings.HasPrefix(w.Body.String(), "-----BEGIN CERTIFICATE-----") {
			t.Errorf("body is not the CA PEM: %q", w.Body)
		}
		if strings.Contains(w.Body.String(), "PRIVATE") {
			t.Error("private key served")
		}
	})
	t.Run("invalid configuration", func(t *testing.T) {
		bad := SetupHandler(ca, SetupOptions{Registries: []SetupRegistry{{Host: "bad host"}}})
		if w := setupGet(bad, "GET", "proxy.test:3128", "/setup/registries.conf"); w.Code != 500 || !strings.Contains(w.Body.String(), `"bad host"`) {
			t.Errorf("status %d body %q, want 500 naming the host", w.Code, w.Body)
		}
		if w := setupGet(bad, "GET", "proxy.test:3128", "/ca.crt"); w.Code != 200 {
			t.Errorf("/ca.crt status %d", w.Code)
		}
	})
}

// tomlEntry is one table header or key/value line of a TOML file.
type tomlEntry struct {
	table, key, value string // table is set for headers; value is the raw value
}

var (
	tomlHeaderRe = regexp.MustCompile(`^(\[\[?)([A-Za-z0-9_.-]+(?:\."[^"\\]*")?)(\]\]?)$`)
	tomlKeyRe    = regexp.MustCompile(`^([A-Za-z0-9_-]+) = (.+)$`)
	tomlStrRe    = `"(?:[^"\\\x00-\x1f]|\\["\\u])*"`
	tomlValueRe  = regexp.MustCompile(`^(?:true|false|` + tomlStrRe + `|\[(?:` + tomlStrRe + `(?:, ` + tomlStrRe + `)*)?\])$`)
)

// parseTOMLSubset checks data against the TOML subset the setup files use
// (comments, [table], [[array]], key = string|bool|[strings]) and returns
// its entries; anything else fails the test.
func parseTOMLSubset(t *testing.T, data string) []tomlEntry {
	t.Helper()
	var out []tomlEntry
	for i, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := tomlHeaderRe.FindStringSubmatch(line); m != nil && len(m[1]) == len(m[3]) {
			out = append(out, tomlEntry{table: m[1] + m[2] + m[3]})
		} else if m := tomlKeyRe.FindStringSubmatch(line); m != nil && tomlValueRe.MatchString(m[2]) {
			v := m[2]
			if strings.HasPrefix(v, `"`) {
				var err error
				if v, err = strconv.Unquote(v); err != nil {
					t.Fatalf("line %d: %q: %v", i+1, line, err)
				}
			}
			out = append(out, tomlEntry{key: m[1], value: v})
		} else {
			t.Fatalf("line %d is not valid TOML (of the subset used): %q", i+1, line)
		}
	}
	return out
}

func TestSetupRegistriesConf(t *testing.T) {
	t.Parallel()
	w := setupGet(SetupHandler(mintTestCA(t), setupTestOptions), "GET", "proxy.test:3128", "/setup/registries.conf")
	entries := parseTOMLSubset(t, w.Body.String())
	// Flatten into one "registry|prefix|location|mirror|insecure" per registry.
	var got []string
	var cur map[string]string
	flush := func() {
		if cur != nil {
			got = append(got, cur["prefix"]+"|"+cur["location"]+"|"+cur["mirror"]+"|"+cur["insecure"])
		}
	}
	section := ""
	for _, e := range entries {
		switch {
		case e.table == "[[registry]]":
			flush()
			cur, section = map[string]string{}, "registry"
		case e.table == "[[registry.mirror]]":
			section = "mirror"
		case e.table != "":
			t.Fatalf("unexpected table %s", e.table)
		case section == "registry" && (e.key == "prefix" || e.key == "location"):
			cur[e.key] = e.value
		case section == "mirror" && e.key == "location":
			cur["mirror"] = e.value
		case section == "mirror" && e.key == "insecure":
			cur["insecure"] = e.value
		default:
			t.Fatalf("unexpected key %s in %s", e.key, section)
		}
	}
	flush()
	want := []string{
		"docker.io|docker.io|proxy.test:3128/docker.io|true",
		"quay.io|quay.io|proxy.test:3128/quay.io|true",
		"registry.local:5000|registry.local:5000|proxy.test:3128/registry.local_5000|true",
		"ghcr.io|ghcr.io|proxy.test:3128/github|true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("registries:\n%s\nwant:\n%s\nfile:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), w.Body)
	}
}

// lintScript runs bash -n and shellcheck on a served script.
func lintScript(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed: run scripts/install-test-deps.sh")
	}
	if out, err := exec.Command(sc, "-s", "bash", "-S", "style", path).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

// runScript runs a served script with the given extra environment and
// returns its stderr; it fails the test when the script fails.
func runScript(t *testing.T, path string, env ...string) string {
	t.Helper()
	cmd := exec.Command("bash", path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(path), err, &stdout, &stderr)
	}
	return stderr.String()
}

// snapshotTree returns every regular file below root as "path mode" →
// content.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files[rel+" "+info.Mode().String()] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// saveScript fetches path from h with the given Host and writes it to a file.
func saveScript(t *testing.T, h http.Handler, host, path string) string {
	t.Helper()
	w := setupGet(h, "GET", host, path)
	if w.Code != 200 {
		t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
	}
	f := filepath.Join(t.TempDir(), filepath.Base(path)+".sh")
	if err := os.WriteFile(f, w.Body.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSetupSystemdScript(t *testing.T) {
	t.Parallel()
	ca := mintTestCA(t)
	h := SetupHandler(ca, setupTestOptions)
	script := saveScript(t, h, "proxy.test:3128", "/setup/systemd")
	lintScript(t, script)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	dropIn := "# Written by container-registry-proxy setup (http://proxy.test:3128/setup/systemd).\n[Service]\n" +
		`Environment="HTTP_PROXY=http://proxy.test:3128" "HTTPS_PROXY=http://proxy.test:3128" "NO_PROXY=localhost,127.0.0.1,::1"` + "\n"
	const (
		debian = "usr/local/share/ca-certificates"
		rhel   = "etc/pki/ca-trust/source/anchors"
	)
	for _, tc := range []struct {
		name      string
		storeDirs []string // trust-store directories present in the root
		wantCA    []string // where the CA must land
		wantLog   []string
	}{
		{"debian", []string{debian}, []string{debian}, []string{"would run: update-ca-certificates", "would run: systemctl daemon-reload", "would run: systemctl restart docker.service"}},
		{"rhel", []string{rhel}, []string{rhel}, []string{"would run: update-ca-trust extract", "would run: systemctl restart containerd.service"}},
		{"no trust store", nil, nil, []string{"warning: no Debian/Ubuntu or RHEL/CentOS trust store found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range tc.storeDirs {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			stderr := runScript(t, script, "SYSTEMD_ROOT="+root, "CA_CERT_FILE="+caFile)
			first := snapshotTree(t, root)
			want := map[string]string{}
			for _, unit := range []string{"docker.service", "podman.service", "containerd.service"} {
				want["etc/systemd/system/"+unit+".d/http-proxy.conf -rw-r--r--"] = dropIn
			}
			for _, d := range tc.wantCA {
				want[d+"/container-registry-proxy.crt -rw-r--r--"] = string(ca.PEM())
			}
			assertTree(t, first, want)
			for _, l := range tc.wantLog {
				if !strings.Contains(stderr, l) {
					t.Errorf("log lacks %q:\n%s", l, stderr)
				}
			}
			runScript(t, script, "SYSTEMD_ROOT="+root+"/", "CA_CERT_FILE="+caFile)
			assertTree(t, snapshotTree(t, root), first)
		})
	}
	t.Run("downloads the CA from the proxy", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			if _, err := exec.LookPath("wget"); err != nil {
				t.Skip("neither curl nor wget installed")
			}
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		live := saveScript(t, h, strings.TrimPrefix(srv.URL, "http://"), "/setup/systemd")
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, debian), 0o755); err != nil {
			t.Fatal(err)
		}
		runScript(t, live, "SYSTEMD_ROOT="+root, "HTTP_PROXY=http://192.0.2.1:9", "http_proxy=http://192.0.2.1:9")
		got, err := os.ReadFile(filepath.Join(root, debian, "container-registry-proxy.crt"))
		if err != nil || !bytes.Equal(got, ca.PEM()) {
			t.Errorf("installed CA differs from /ca.crt (err %v)", err)
		}
	})
}

func TestSetupContainerdScript(t *testing.T) {
	t.Parallel()
	h := SetupHandler(mintTestCA(t), setupTestOptions)
	script := saveScript(t, h, "proxy.test:3128", "/setup/containerd")
	lintScript(t, script)
	hosts := func(server string) string {
		s := "# Written by container-registry-proxy setup (http://proxy.test:3128/setup/containerd).\n"
		if server != "" {
			s += `server = "` + server + "\"\n"
		}
		return s + "\n[host.\"http://proxy.test:3128\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	}
	want := map[string]string{
		"etc/containerd/certs.d/_default/hosts.toml -rw-r--r--":            hosts(""),
		"etc/containerd/certs.d/docker.io/hosts.toml -rw-r--r--":           hosts("https://registry-1.docker.io"),
		"etc/containerd/certs.d/quay.io/hosts.toml -rw-r--r--":             hosts("https://quay.io"),
		"etc/containerd/certs.d/registry.local:5000/hosts.toml -rw-r--r--": hosts("https://registry.local:5000"),
		"etc/containerd/certs.d/ghcr.io/hosts.toml -rw-r--r--":             hosts("https://ghcr.io"),
	}
	for _, variable := range []string{"SETUP_ROOT", "SYSTEMD_ROOT"} {
		t.Run(variable, func(t *testing.T) {
			root := t.TempDir()
			runScript(t, script, variable+"="+root)
			first := snapshotTree(t, root)
			assertTree(t, first, want)
			for _, content := range first {
				parseTOMLSubset(t, content)
			}
			runScript(t, script, variable+"="+root)
			assertTree(t, snapshotTree(t, root), first)
		})
	}
}

// assertTree compares two snapshots file by file.
func assertTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != w {
			t.Errorf("%s:\n%s\nwant:\n%s", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected file %s", k)
		}
	}
}
