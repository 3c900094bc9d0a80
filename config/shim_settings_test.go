package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestShimSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := func(m map[string]string) func(string) string {
		m["CACHE_DIRECTORY"] = dir
		return func(k string) string { return m[k] }
	}
	c, err := Load(nil, env(map[string]string{
		"SEND_TIMEOUT": "2m", "CLIENT_BODY_TIMEOUT": "30s", "CLIENT_HEADER_TIMEOUT": "5s", "KEEPALIVE_TIMEOUT": "1h",
		"PROXY_CONNECT_CONNECT_TIMEOUT": "3s", "PROXY_CONNECT_READ_TIMEOUT": "4s", "PROXY_CONNECT_SEND_TIMEOUT": "6s",
		"PROXY_REQUEST_BUFFERING": "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := []time.Duration{time.Duration(c.Client.SendTimeout), time.Duration(c.Client.BodyTimeout), time.Duration(c.Client.HeaderTimeout), time.Duration(c.Client.KeepaliveTimeout),
		time.Duration(c.Connect.ConnectTimeout), time.Duration(c.Connect.ReadTimeout), time.Duration(c.Connect.SendTimeout)}
	want := []time.Duration{2 * time.Minute, 30 * time.Second, 5 * time.Second, time.Hour, 3 * time.Second, 4 * time.Second, 6 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("setting %d = %v, want %v", i, got[i], want[i])
		}
	}
	if c.ProxyRequestBuffering {
		t.Error("PROXY_REQUEST_BUFFERING=false not applied")
	}
	cases := []struct {
		name, yaml, key string
	}{
		{"bad port", "connect:\n  allowPorts: [0]\n", "connect.allowPorts[0]"},
		{"bad network", "connect:\n  allowNetworks: [\"10.0.0.0/99\"]\n", "connect.allowNetworks[0]"},
		{"zero timeout", "client:\n  sendTimeout: 0s\n", "client.sendTimeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join(t.TempDir(), "c.yml")
			if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load([]string{"--config", f}, env(map[string]string{}))
			if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
	c, err = Load(nil, env(map[string]string{}))
	if err != nil || len(c.Connect.AllowPorts) != 1 || c.Connect.AllowPorts[0] != 443 || !c.ProxyRequestBuffering {
		t.Fatalf("defaults: %+v %v", c.Connect, err)
	}
}
