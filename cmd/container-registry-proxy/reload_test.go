package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/sirupsen/logrus"
)

// TestReloadSwapsPolicyAndCredentials: a reload (what SIGHUP does) puts a
// new htpasswd user and new upstream credentials in force without a
// restart and on the same connection; a broken configuration is refused
// with one log line naming the key, and the old policy stays.
func TestReloadSwapsPolicyAndCredentials(t *testing.T) {
	t.Parallel()
	pub := testreg.Start(t, testreg.Options{TLS: true})
	priv := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthBasic, Username: "robot", Password: "right-pw"})
	pub.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 5_000))
	priv.PushImage(t, "team/secret", "v1", testreg.RandomLayer(t, 5_000))
	users := htpasswdFile(t, map[string]string{"alice": "alice-pw"})
	dir := t.TempDir()
	yaml := func(password string) string {
		return fmt.Sprintf(`
dockerHub: false
clientAuth:
  htpasswd: %s
registries:
  - host: members.test
    endpoint: %s
    caFile: %s
    access:
      mode: authenticated
  - host: private.test
    endpoint: %s
    caFile: %s
    username: robot
    password: %s
    access:
      mode: public
`, users, pub.URL, pub.CAFile, priv.URL, priv.CAFile, password)
	}
	addr, logs, a, _ := runProxyIn(t, dir, yaml("wrong-pw"))
	cfgFile := filepath.Join(dir, "config.yml")
	a.reload.load = func() (*config.Config, error) {
		return config.Load([]string{"--config", cfgFile, "--cache-dir", filepath.Join(dir, "cache"), "--ca-dir", filepath.Join(dir, "ca")}, envMap(map[string]string{}))
	}
	log := logrus.New()
	log.SetOutput(logs)

	// One keep-alive connection for every request: a reload drops none.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get := func(path, user, pass string) int {
		t.Helper()
		auth := ""
		if user != "" {
			auth = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n"
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n%s\r\n", path, addr, auth)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s on the kept connection: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	members := "/v2/members.test/team/app/manifests/v1"
	secret := "/v2/private.test/team/secret/manifests/v1"
	if s := get(members, "alice", "alice-pw"); s != 200 {
		t.Fatalf("alice before the reload: %d", s)
	}
	if s := get(members, "bob", "bob-pw"); s != 401 {
		t.Fatalf("bob before the reload: %d, want 401", s)
	}
	if s := get(secret, "", ""); s == 200 {
		t.Fatalf("private image with the wrong upstream password: %d", s)
	}

	// bob joins the htpasswd file; the upstream password is corrected.
	bob := htpasswdFile(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	data, _ := os.ReadFile(bob)
	if err := os.WriteFile(users, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte(yaml("right-pw")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.reload.reload(log); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !strings.Contains(logs.String(), "reloaded credentials and access policy") {
		t.Errorf("no reload log line:\n%s", logs)
	}
	if s := get(members, "bob", "bob-pw"); s != 200 {
		t.Fatalf("bob after the reload: %d, want 200", s)
	}
	if s := get(secret, "", ""); s != 200 {
		t.Fatalf("private image after the password was corrected: %d, want 200", s)
	}

	// A broken htpasswd file: the reload is refused, bob still reads.
	if err := os.WriteFile(users, []byte("bob:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mark := len(logs.String())
	if err := a.reload.reload(log); err == nil {
		t.Fatal("reload with a broken htpasswd file succeeded")
	}
	failLines := strings.Split(strings.TrimSpace(logs.String()[mark:]), "\n")
	if len(failLines) != 1 || !strings.Contains(failLines[0], "clientAuth.htpasswd") || !strings.Contains(failLines[0], "old credentials and access policy stay") {
		t.Errorf("want one log line naming clientAuth.htpasswd, got:\n%s", strings.Join(failLines, "\n"))
	}
	if s := get(members, "bob", "bob-pw"); s != 200 {
		t.Fatalf("bob after a refused reload: %d, want 200 (old policy kept)", s)
	}

	// A changed list of registries needs a restart.
	if err := os.WriteFile(cfgFile, []byte(yaml("right-pw")+"  - host: more.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.reload.reload(log); err == nil || !strings.Contains(err.Error(), "registries") {
		t.Fatalf("reload with another registry: %v, want a refusal naming registries", err)
	}
}
