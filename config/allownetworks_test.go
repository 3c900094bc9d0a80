package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAllowNetworks: upstream.allowNetworks (UPSTREAM_ALLOW_NETWORKS,
// spaces or commas) and registries[].allowNetworks are read, and a bad
// entry is one error naming its key and index.
func TestAllowNetworks(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string {
		m["CACHE_DIRECTORY"] = t.TempDir()
		return func(k string) string { return m[k] }
	}
	load := func(t *testing.T, yaml string, vars map[string]string) (*Config, error) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "c.yml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return Load([]string{"--config", f}, env(vars))
	}
	c, err := load(t, "registries:\n  - host: reg.test\n    allowNetworks: [10.1.0.0/16, 192.168.1.7]\n", map[string]string{"UPSTREAM_ALLOW_NETWORKS": "100.64.0.0/10, fd00::/8 172.16.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"100.64.0.0/10", "fd00::/8", "172.16.0.1"}; !slices.Equal(c.Upstream.AllowNetworks, want) {
		t.Errorf("upstream.allowNetworks = %q, want %q", c.Upstream.AllowNetworks, want)
	}
	if want := []string{"10.1.0.0/16", "192.168.1.7"}; len(c.Registries) != 1 || !slices.Equal(c.Registries[0].AllowNetworks, want) {
		t.Errorf("registries = %+v, want reg.test with allowNetworks %q", c.Registries, want)
	}
	c, err = load(t, "upstream:\n  allowNetworks: [10.0.0.0/8]\n", map[string]string{})
	if err != nil || !slices.Equal(c.Upstream.AllowNetworks, []string{"10.0.0.0/8"}) {
		t.Errorf("upstream.allowNetworks from YAML: %q %v", c.Upstream.AllowNetworks, err)
	}
	for _, tc := range []struct {
		name, yaml string
		vars       map[string]string
		key        string
	}{
		{"env", "", map[string]string{"UPSTREAM_ALLOW_NETWORKS": "10.0.0.0/8 10.0.0.0/99"}, "UPSTREAM_ALLOW_NETWORKS[1]"},
		{"yaml", "upstream:\n  allowNetworks: [nope]\n", map[string]string{}, "upstream.allowNetworks[0]"},
		{"registry", "registries:\n  - host: reg.test\n    allowNetworks: [10.0.0.0/8, \"10.0.0.0/33\"]\n", map[string]string{}, "registries[0].allowNetworks[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tc.yaml, tc.vars)
			if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line naming %s", err, tc.key)
			}
		})
	}
}
