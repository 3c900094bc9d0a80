package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(nil, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	cacheBase, err := os.UserCacheDir()
	if err != nil {
		cacheBase = os.TempDir()
	}
	confBase, err := os.UserConfigDir()
	if err != nil {
		confBase = os.TempDir()
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, ":3128"},
		{"cacheDir", c.CacheDir, filepath.Join(cacheBase, "container-registry-proxy")},
		{"caDir", c.CADir, filepath.Join(confBase, "container-registry-proxy", "ca")},
		{"logFormat", c.LogFormat, "text"},
		{"debug", c.Debug, false},
		{"dockerHub", c.DockerHub, true},
		{"allowPush", c.AllowPush, false},
		{"registries", hosts(c), []string{"k8s.gcr.io", "gcr.io", "quay.io"}},
		{"namespace", c.Registries[0].Namespace, "k8s.gcr.io"},
		{"manifest cache off", c.ManifestCache.Enabled, false},
		{"primary time", time.Duration(c.ManifestCache.PrimaryTime), 10 * time.Minute},
		{"secondary time", time.Duration(c.ManifestCache.SecondaryTime), 60 * day},
		{"default time", time.Duration(c.ManifestCache.DefaultTime), time.Hour},
		{"primary compiled", c.ManifestCache.Primary.String(), `^(?:(stable|nightly|production|test))`},
		{"verifySSL", c.Upstream.VerifySSL, true},
		{"forceHTTP11", c.Upstream.ForceHTTP11, false},
		{"connectTimeout", time.Duration(c.Upstream.ConnectTimeout), time.Minute},
		{"readTimeout", time.Duration(c.Upstream.ReadTimeout), time.Minute},
		{"sendTimeout", time.Duration(c.Upstream.SendTimeout), time.Minute},
		{"maxSize", int64(c.Cache.MaxSize), int64(32 << 30)},
		{"minFree", int64(c.Cache.MinFree), int64(1 << 30)},
		{"inactiveTime", time.Duration(c.Cache.InactiveTime), 60 * day},
		{"fillTimeout", time.Duration(c.FillTimeout), 30 * time.Minute},
		{"maxFills", c.MaxFills, 256},
		{"maxFillsPerUpstream", c.MaxFillsPerUpstream, 64},
		{"rateLimit.minRemaining", c.RateLimit.MinRemaining, 10},
		{"metricsListen", c.MetricsListen, ""},
		{"shutdownGrace", time.Duration(c.ShutdownGrace), 30 * time.Second},
		{"storage", c.Storage, map[string]map[string]any{"filesystem": {"rootdirectory": c.CacheDir}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
}

// TestLoadPrecedence checks default < file < env < flag for a few settings.
func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "c.yml", `
listen: ":4000"
cacheDir: /file/cache
debug: true
registries:
  - host: a.example
`)
	fileEnv := map[string]string{"CONFIG_FILE": file}
	allEnv := map[string]string{
		"CONFIG_FILE":     file,
		"LISTEN":          ":5000",
		"CACHE_DIRECTORY": "/env/cache",
		"DEBUG":           "no",
		"REGISTRIES":      "b.example a.example",
	}
	flags := []string{"--listen", ":6000", "--cache-dir=/flag/cache", "--debug", "--registries", "c.example"}
	defaultCache := defaultDir(os.UserCacheDir, appName)
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		listen     string
		cacheDir   string
		debug      bool
		registries []string
	}{
		{"defaults", nil, nil, ":3128", defaultCache, false, []string{"k8s.gcr.io", "gcr.io", "quay.io"}},
		{"file over defaults", nil, fileEnv, ":4000", "/file/cache", true, []string{"a.example"}},
		{"env over file", nil, allEnv, ":5000", "/env/cache", false, []string{"a.example", "b.example"}},
		{"flags over env", flags, allEnv, ":6000", "/flag/cache", true, []string{"a.example", "c.example"}},
		{"flag --debug=false over file", []string{"--debug=false"}, fileEnv, ":4000", "/file/cache", false, []string{"a.example"}},
		{"--config over CONFIG_FILE", []string{"--config", file}, map[string]string{"CONFIG_FILE": "/nonexistent"}, ":4000", "/file/cache", true, []string{"a.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.args, envMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tc.listen {
				t.Errorf("Listen = %q, want %q", c.Listen, tc.listen)
			}
			if c.CacheDir != tc.cacheDir {
				t.Errorf("CacheDir = %q, want %q", c.CacheDir, tc.cacheDir)
			}
			if c.Debug != tc.debug {
				t.Errorf("Debug = %v, want %v", c.Debug, tc.debug)
			}
			if got := hosts(c); !reflect.DeepEqual(got, tc.registries) {
				t.Errorf("registries = %q, want %q", got, tc.registries)
			}
			if root := c.Storage["filesystem"]["rootdirectory"]; root != tc.cacheDir {
				t.Errorf("rootdirectory = %v, want CacheDir %q", root, tc.cacheDir)
			}
		})
	}
}

func TestLoadEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"ENABLE_MANIFEST_CACHE":          "YES",
		"MANIFEST_CACHE_PRIMARY_REGEX":   "(main)",
		"MANIFEST_CACHE_PRIMARY_TIME":    "5m",
		"MANIFEST_CACHE_SECONDARY_REGEX": `v\d`,
		"MANIFEST_CACHE_SECONDARY_TIME":  "1d",
		"MANIFEST_CACHE_DEFAULT_TIME":    "1h30m",
		"MANIFEST_CACHE_REVALIDATE_WAIT": "500ms",
		"CACHE_MAX_SIZE":                 "100g",
		"CACHE_MIN_FREE":                 "512m",
		"CACHE_INACTIVE_TIME":            "1w",
		"VERIFY_SSL":                     "off",
		"FORCE_UPSTREAM_HTTP_1_1":        "1",
		"PROXY_CONNECT_TIMEOUT":          "5",
		"PROXY_READ_TIMEOUT":             "2m",
		"PROXY_SEND_TIMEOUT":             "3m",
		"FILL_TIMEOUT":                   "1h",
		"MAX_FILLS":                      "32",
		"MAX_FILLS_PER_UPSTREAM":         "8",
		"OUTAGE_HOLD":                    "0",
		"ALLOW_PUSH":                     "On",
		"DOCKER_HUB":                     "false",
		"LOG_FORMAT":                     "json",
		"CA_DIRECTORY":                   "/env/ca",
		"RATE_LIMIT_MIN_REMAINING":       "0",
		"METRICS_LISTEN":                 "127.0.0.1:9090",
	}
	c, err := Load(nil, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ManifestCache = ManifestCache{
		Enabled: true, PrimaryRegex: "(main)", PrimaryTime: Duration(5 * time.Minute),
		SecondaryRegex: `v\d`, SecondaryTime: Duration(day), DefaultTime: Duration(90 * time.Minute),
		RevalidateWait: Duration(500 * time.Millisecond),
	}
	want.Cache = Cache{MaxSize: 100 << 30, MinFree: 512 << 20, InactiveTime: Duration(7 * day)}
	want.Upstream = Upstream{VerifySSL: false, ForceHTTP11: true, ConnectTimeout: Duration(5 * time.Second),
		ReadTimeout: Duration(2 * time.Minute), SendTimeout: Duration(3 * time.Minute)}
	want.FillTimeout = Duration(time.Hour)
	want.AllowPush, want.DockerHub, want.LogFormat, want.CADir = true, false, "json", "/env/ca"

	got := *c
	got.ManifestCache.Primary, got.ManifestCache.Secondary = nil, nil
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"manifestCache", got.ManifestCache, want.ManifestCache},
		{"cache", got.Cache, want.Cache},
		{"upstream", got.Upstream, want.Upstream},
		{"fillTimeout", got.FillTimeout, want.FillTimeout},
		{"fill caps", []int{got.MaxFills, got.MaxFillsPerUpstream}, []int{32, 8}},
		{"outageHold", got.OutageHold, Duration(0)},
		{"rateLimit", got.RateLimit, RateLimit{MinRemaining: 0}},
		{"metricsListen", got.MetricsListen, "127.0.0.1:9090"},
		{"flags", []any{got.AllowPush, got.DockerHub, got.LogFormat, got.CADir}, []any{want.AllowPush, want.DockerHub, want.LogFormat, want.CADir}},
		{"upstreams without Docker Hub", len(c.Upstreams()), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %+v\nwant %+v", tc.got, tc.want)
			}
		})
	}
}

func TestLoadRegistriesMerge(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "c.yml", `
registries:
  - host: registry.local:5000
    endpoint: http://127.0.0.1:5000/
    insecure: true
  - host: Quay.io
    username: u
    password: p
`)
	empty := writeFile(t, "empty.yml", "registries: []\n")
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		hosts []string
	}{
		{"yaml only, no default added", nil, map[string]string{"CONFIG_FILE": file}, []string{"registry.local:5000", "quay.io"}},
		{"REGISTRIES adds and skips listed hosts", nil, map[string]string{"CONFIG_FILE": file, "REGISTRIES": "quay.io gcr.io  ghcr.io gcr.io"}, []string{"registry.local:5000", "quay.io", "gcr.io", "ghcr.io"}},
		{"REGISTRIES alone replaces the default", nil, map[string]string{"REGISTRIES": "ghcr.io"}, []string{"ghcr.io"}},
		{"--registries replaces REGISTRIES", []string{"--registries", "nvcr.io,ghcr.io", "--registries=quay.io"}, map[string]string{"CONFIG_FILE": file, "REGISTRIES": "gcr.io"}, []string{"registry.local:5000", "quay.io", "nvcr.io", "ghcr.io"}},
		{"empty yaml list means none", nil, map[string]string{"CONFIG_FILE": empty}, []string{}},
		{"host with :443 is the same registry", nil, map[string]string{"REGISTRIES": "quay.io quay.io:443"}, []string{"quay.io"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.args, envMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := hosts(c); !reflect.DeepEqual(got, tc.hosts) {
				t.Errorf("hosts = %q, want %q", got, tc.hosts)
			}
			for _, r := range c.Registries {
				switch r.Host {
				case "registry.local:5000":
					if r.Endpoint != "http://127.0.0.1:5000" || !r.Insecure || r.Namespace != "registry.local_5000" {
						t.Errorf("yaml entry lost settings: %+v", r)
					}
				case "quay.io":
					if tc.env["CONFIG_FILE"] == file && r.Username != "u" {
						t.Errorf("yaml entry for quay.io lost its credentials: %+v", r)
					}
				}
			}
		})
	}
}

func TestLoadDockerHubAliases(t *testing.T) {
	t.Parallel()
	for _, alias := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "Registry-1.Docker.IO"} {
		t.Run("REGISTRIES "+alias, func(t *testing.T) {
			t.Parallel()
			c, err := Load(nil, envMap(map[string]string{"REGISTRIES": "quay.io " + alias + " docker.io"}))
			if err != nil {
				t.Fatal(err)
			}
			if got := hosts(c); !reflect.DeepEqual(got, []string{"quay.io", DockerHubHost}) {
				t.Errorf("hosts = %q", got)
			}
			if ns := c.Registries[1].Namespace; ns != "docker.io" {
				t.Errorf("namespace = %q", ns)
			}
			if n := len(c.Upstreams()); n != 2 {
				t.Errorf("Upstreams() has %d entries, want 2 (no second Docker Hub)", n)
			}
		})
		t.Run("YAML "+alias+" keeps its credentials", func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, "c.yml", "registries:\n  - host: "+alias+"\n    username: me\n    password: pat\n    endpoint: https://mirror.example\n")
			c, err := Load(nil, envMap(map[string]string{"CONFIG_FILE": file, "REGISTRIES": "index.docker.io docker.io"}))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Registries) != 1 {
				t.Fatalf("registries = %+v, want one Docker Hub entry", c.Registries)
			}
			r := c.Registries[0]
			if r.Host != DockerHubHost || r.Username != "me" || r.Password != "pat" || r.Endpoint != "https://mirror.example" {
				t.Errorf("entry = %+v", r)
			}
		})
	}
	t.Run("YAML docker.io twice is a duplicate", func(t *testing.T) {
		t.Parallel()
		file := writeFile(t, "c.yml", "registries:\n  - host: docker.io\n  - host: index.docker.io\n")
		_, err := Load(nil, envMap(map[string]string{"CONFIG_FILE": file}))
		wantKeyError(t, err, "registries[1].host",
			`registries[1].host: invalid value "index.docker.io": duplicate registry (already given by registries[0].host)`)
	})
	t.Run("listed while turned off", func(t *testing.T) {
		t.Parallel()
		_, err := Load([]string{"--no-docker-hub"}, envMap(map[string]string{"REGISTRIES": "docker.io"}))
		wantKeyError(t, err, "REGISTRIES", `REGISTRIES: invalid value "docker.io": listed, but Docker Hub is turned off by --no-docker-hub`)
	})
	t.Run("Upstreams adds Docker Hub", func(t *testing.T) {
		t.Parallel()
		c, err := Load(nil, envMap(nil))
		if err != nil {
			t.Fatal(err)
		}
		u := c.Upstreams()
		if last := u[len(u)-1]; last.Host != DockerHubHost || last.Namespace != DockerHubHost {
			t.Errorf("last upstream = %+v", last)
		}
	})
}

func TestLoadHelpAndArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--help", []string{"--help"}, ""},
		{"-h", []string{"-h"}, ""},
		{"unknown flag", []string{"--nope"}, "unknown flag: --nope"},
		{"bad bool flag", []string{"--debug=maybe"}, `invalid argument "maybe" for "--debug" flag: invalid boolean "maybe"`},
		{"positional argument", []string{"serve"}, `unexpected argument "serve"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(tc.args, envMap(nil))
			if tc.want == "" {
				if !errors.Is(err, pflag.ErrHelp) {
					t.Fatalf("error = %v, want pflag.ErrHelp", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error = %q, want one line containing %q", err, tc.want)
			}
		})
	}
	t.Run("usage", func(t *testing.T) {
		t.Parallel()
		u := Usage()
		for _, f := range []string{"--config", "--listen", "--cache-dir", "--ca-dir", "--log-format", "--debug", "--no-docker-hub", "--allow-push", "--registries", "CACHE_DIRECTORY"} {
			if !strings.Contains(u, f) {
				t.Errorf("Usage() lacks %s:\n%s", f, u)
			}
		}
	})
}

// TestNamespaces: every served registry's canonical host maps to its
// mirror path alias, Docker Hub's aliases folded.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "config.yml", "registries:\n  - host: Registry.Test:5000\n  - host: quay.io\n    namespace: q\n")
	c, err := Load([]string{"--config", f}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Namespaces()
	want := map[string]string{"registry.test:5000": "registry.test_5000", "quay.io": "q", "docker.io": "docker.io"}
	for h, ns := range want {
		if got[h] != ns {
			t.Errorf("Namespaces()[%q] = %q, want %q (all: %v)", h, got[h], ns, got)
		}
	}
}
