package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCAFile writes a self-signed certificate as PEM.
func testCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test CA"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IsCA:         true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// TestLoadErrors checks that every error is one line naming the key as the
// user wrote it, and the bad value.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	notPEM := writeFile(t, "bad.pem", "hello\n")
	for _, tc := range []struct {
		name string
		yaml string // written to a file given by CONFIG_FILE when not empty
		env  map[string]string
		args []string
		key  string
		want string // whole message; only the key is checked when empty
	}{
		{name: "bad duration in env",
			env:  map[string]string{"MANIFEST_CACHE_PRIMARY_TIME": "10x"},
			key:  "MANIFEST_CACHE_PRIMARY_TIME",
			want: `MANIFEST_CACHE_PRIMARY_TIME: invalid duration "10x": unknown unit "x" (want ms, s, m, h, d, w, M or y)`},
		{name: "rate limit not a number",
			env: map[string]string{"RATE_LIMIT_MIN_REMAINING": "ten"},
			key: "RATE_LIMIT_MIN_REMAINING"},
		{name: "negative rate limit",
			yaml: "rateLimit:\n  minRemaining: -1\n",
			key:  "rateLimit.minRemaining"},
		{name: "redis without a shared storage driver",
			env:  map[string]string{"REDIS_ADDR": "127.0.0.1:6379"},
			key:  "REDIS_ADDR",
			want: `REDIS_ADDR: invalid value "127.0.0.1:6379": replicas sharing Redis must share the storage too; the filesystem driver is one process's: want s3, gcs or azure`},
		{name: "redis address without a port",
			yaml: "storage:\n  s3: {bucket: b, region: r}\nredis:\n  addr: redis\n",
			key:  "redis.addr"},
		{name: "advertise without redis",
			args: []string{"--advertise", "http://10.0.0.1:3128"},
			key:  "redis.addr"},
		{name: "advertise without a secret",
			yaml: "storage:\n  s3: {bucket: b, region: r}\nredis:\n  addr: redis:6379\ncluster:\n  advertise: http://10.0.0.1:3128\n",
			key:  "cluster.secret"},
		{name: "advertise with a path",
			env:  map[string]string{"CLUSTER_ADVERTISE": "http://10.0.0.1:3128/x", "CLUSTER_SECRET": "0123456789abcdef"},
			yaml: "storage:\n  s3: {bucket: b, region: r}\nredis:\n  addr: redis:6379\n",
			key:  "CLUSTER_ADVERTISE"},
		{name: "redirect on the filesystem",
			yaml: "storage:\n  filesystem: {}\n  redirect: true\n",
			key:  "storage.redirect"},
		{name: "redirect not a boolean",
			env: map[string]string{"STORAGE_REDIRECT": "sometimes"},
			key: "STORAGE_REDIRECT"},
		{name: "prefix with a brace",
			env:  map[string]string{"REDIS_PREFIX": "a{b}", "REDIS_ADDR": "r:1"},
			yaml: "storage:\n  s3: {bucket: b, region: r}\n",
			key:  "REDIS_PREFIX"},
		{name: "negative revalidation wait",
			env: map[string]string{"MANIFEST_CACHE_REVALIDATE_WAIT": "-2s"},
			key: "MANIFEST_CACHE_REVALIDATE_WAIT"},
		{name: "negative outage hold",
			yaml: "outageHold: -1s\n",
			key:  "outageHold"},
		{name: "bad metrics listen flag",
			args: []string{"--metrics-listen", "9090"},
			key:  "--metrics-listen"},
		{name: "bad size in env",
			env:  map[string]string{"CACHE_MAX_SIZE": "32gb"},
			key:  "CACHE_MAX_SIZE",
			want: `CACHE_MAX_SIZE: invalid size "32gb": unknown unit "gb" (want k, m, g or t)`},
		{name: "bad boolean in env",
			env:  map[string]string{"ENABLE_MANIFEST_CACHE": "maybe"},
			key:  "ENABLE_MANIFEST_CACHE",
			want: `ENABLE_MANIFEST_CACHE: invalid boolean "maybe": want true/false, 1/0, yes/no or on/off`},
		{name: "zero duration in env",
			env:  map[string]string{"PROXY_READ_TIMEOUT": "0"},
			key:  "PROXY_READ_TIMEOUT",
			want: `PROXY_READ_TIMEOUT: invalid value "0s": must be positive`},
		{name: "bad regex in env",
			env:  map[string]string{"MANIFEST_CACHE_PRIMARY_REGEX": "(stable"},
			key:  "MANIFEST_CACHE_PRIMARY_REGEX",
			want: "MANIFEST_CACHE_PRIMARY_REGEX: invalid value \"(stable\": error parsing regexp: missing closing ): `(stable`"},
		{name: "bad regex in yaml",
			yaml: "manifestCache:\n  secondaryRegex: 'a(?P<x'\n",
			key:  "manifestCache.secondaryRegex"},
		{name: "bad duration in yaml",
			yaml: "manifestCache:\n  primaryTime: 10x\n",
			key:  "manifestCache.primaryTime",
			want: `manifestCache.primaryTime: invalid duration "10x": unknown unit "x" (want ms, s, m, h, d, w, M or y) (c.yml:2)`},
		{name: "unknown yaml key",
			yaml: "manifestCache:\n  enabled: true\n  primaryTme: 10m\n",
			key:  "manifestCache.primaryTme",
			want: `manifestCache.primaryTme: unknown key (c.yml:3)`},
		{name: "unknown top-level yaml key",
			yaml: "listen: ':3128'\nregistry: quay.io\n",
			key:  "registry",
			want: `registry: unknown key (c.yml:2)`},
		{name: "unknown registry key",
			yaml: "registries:\n  - host: quay.io\n    url: https://quay.io\n",
			key:  "registries[0].url"},
		{name: "repeated yaml key",
			yaml: "debug: true\ndebug: false\n",
			key:  "debug",
			want: `debug: key repeated (c.yml:2)`},
		{name: "bad bool in yaml",
			yaml: "debug: maybe\n",
			key:  "debug",
			want: `debug: invalid boolean "maybe": want true/false, 1/0, yes/no or on/off (c.yml:1)`},
		{name: "yaml list where a mapping belongs",
			yaml: "upstream: [1]\n",
			key:  "upstream",
			want: `upstream: expected a mapping (c.yml:1)`},
		{name: "yaml syntax error",
			yaml: "listen: [\n",
			key:  "c.yml"},
		{name: "missing config file",
			args: []string{"--config", "/nonexistent/c.yml"},
			key:  "--config",
			want: `--config: invalid value "/nonexistent/c.yml": no such file or directory`},
		{name: "duplicate registry",
			yaml: "registries:\n  - host: quay.io\n  - host: ghcr.io\n  - host: QUAY.IO\n",
			key:  "registries[2].host",
			want: `registries[2].host: invalid value "QUAY.IO": duplicate registry (already given by registries[0].host)`},
		{name: "duplicate namespace",
			yaml: "registries:\n  - host: a.example\n    namespace: x.example\n  - host: x.example\n",
			key:  "registries[1].namespace",
			want: `registries[1].namespace: invalid value "x.example": duplicate namespace (already used by registries[0].namespace)`},
		{name: "namespace with slash",
			yaml: "registries:\n  - host: a.example\n    namespace: a/b\n",
			key:  "registries[0].namespace",
			want: `registries[0].namespace: invalid value "a/b": must not contain ':' or '/'`},
		{name: "host with scheme",
			yaml: "registries:\n  - host: https://quay.io\n",
			key:  "registries[0].host",
			want: `registries[0].host: invalid value "https://quay.io": want host[:port] without a scheme`},
		{name: "host with path in REGISTRIES",
			env:  map[string]string{"REGISTRIES": "quay.io gcr.io/proj"},
			key:  "REGISTRIES",
			want: `REGISTRIES: invalid value "gcr.io/proj": want host[:port] without a path`},
		{name: "host with bad port",
			yaml: "registries:\n  - host: reg.example:99999\n",
			key:  "registries[0].host",
			want: `registries[0].host: invalid value "reg.example:99999": port "99999" is not a number from 1 to 65535`},
		{name: "bare ipv6 host",
			env: map[string]string{"REGISTRIES": "fd00::1"},
			key: "REGISTRIES"},
		{name: "ipv6 host needs a namespace",
			yaml: "registries:\n  - host: '[fd00::1]:5000'\n",
			key:  "registries[0].host",
			want: `registries[0].host: invalid value "[fd00::1]:5000": default namespace "[fd00__1]_5000" is not a valid path component; set namespace`},
		{name: "endpoint with bad scheme",
			yaml: "registries:\n  - host: quay.io\n    endpoint: ftp://quay.io\n",
			key:  "registries[0].endpoint",
			want: `registries[0].endpoint: invalid value "ftp://quay.io": want an http:// or https:// URL`},
		{name: "endpoint with path",
			yaml: "registries:\n  - host: quay.io\n    endpoint: https://quay.io/v2/\n",
			key:  "registries[0].endpoint",
			want: `registries[0].endpoint: invalid value "https://quay.io/v2/": a path is not allowed (want scheme://host[:port])`},
		{name: "endpoint without scheme",
			yaml: "registries:\n  - host: quay.io\n    endpoint: quay.io:443\n",
			key:  "registries[0].endpoint"},
		{name: "endpoint with credentials",
			yaml: "registries:\n  - host: quay.io\n    endpoint: https://u:p@quay.io\n",
			key:  "registries[0].endpoint"},
		{name: "missing caFile",
			yaml: "registries:\n  - host: quay.io\n    caFile: /nonexistent/ca.pem\n",
			key:  "registries[0].caFile",
			want: `registries[0].caFile: invalid value "/nonexistent/ca.pem": no such file or directory`},
		{name: "caFile not PEM",
			yaml: "registries:\n  - host: quay.io\n    caFile: " + notPEM + "\n",
			key:  "registries[0].caFile",
			want: `registries[0].caFile: invalid value "` + notPEM + `": no PEM certificate found`},
		{name: "password without username",
			yaml: "registries:\n  - host: quay.io\n    password: secret\n",
			key:  "registries[0].username",
			want: `registries[0].username: missing; username and password go together`},
		{name: "bad token realm",
			yaml: "registries:\n  - host: quay.io\n    tokenRealms: [https://auth.quay.io]\n",
			key:  "registries[0].tokenRealms[0]"},
		{name: "bad log format flag",
			args: []string{"--log-format", "xml"},
			key:  "--log-format",
			want: `--log-format: invalid value "xml": want text or json`},
		{name: "bad log format env",
			env:  map[string]string{"LOG_FORMAT": "JSONL"},
			key:  "LOG_FORMAT",
			want: `LOG_FORMAT: invalid value "JSONL": want text or json`},
		{name: "bad listen",
			args: []string{"--listen", "3128"},
			key:  "--listen",
			want: `--listen: invalid value "3128": missing port in address; want host:port, e.g. :3128`},
		{name: "bad listen port",
			yaml: "listen: ':http'\n",
			key:  "listen",
			want: `listen: invalid value ":http": port "http" is not a number from 0 to 65535`},
		{name: "two storage drivers",
			yaml: "storage:\n  filesystem:\n    rootdirectory: /x\n  s3:\n    bucket: b\n",
			key:  "storage",
			want: `storage: invalid value "filesystem, s3": want exactly one driver of filesystem, inmemory, s3, gcs, azure`},
		{name: "unknown storage driver",
			yaml: "storage:\n  swift: {}\n",
			key:  "storage",
			want: `storage: invalid value "swift": unknown driver; want one of filesystem, inmemory, s3, gcs, azure`},
		{name: "storage with only non-driver keys",
			yaml: "storage:\n  delete:\n    enabled: true\n",
			key:  "storage",
			want: `storage: no driver; want one of filesystem, inmemory, s3, gcs, azure`},
		{name: "storage driver parameters not a mapping",
			yaml: "storage:\n  s3: bucket\n",
			key:  "storage.s3"},
		{name: "zero max size",
			yaml: "cache:\n  maxSize: 0\n",
			key:  "cache.maxSize",
			want: `cache.maxSize: invalid value "0": must be positive`},
		{name: "zero fill cap in env",
			env:  map[string]string{"MAX_FILLS": "0"},
			key:  "MAX_FILLS",
			want: `MAX_FILLS: invalid value "0": must be positive`},
		{name: "negative fill cap per upstream",
			yaml: "maxFillsPerUpstream: -1\n",
			key:  "maxFillsPerUpstream",
			want: `maxFillsPerUpstream: invalid value "-1": must be positive`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = v
			}
			if tc.yaml != "" {
				env["CONFIG_FILE"] = writeFile(t, "c.yml", tc.yaml)
			}
			_, err := Load(tc.args, envMap(env))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			msg := err.Error()
			if f := env["CONFIG_FILE"]; f != "" {
				msg = strings.ReplaceAll(msg, f, "c.yml")
			}
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("error has several lines: %q", msg)
			}
			if !strings.HasPrefix(msg, tc.key+": ") {
				t.Errorf("error %q does not start with the key %q", msg, tc.key)
			}
			if tc.want != "" && msg != tc.want {
				t.Errorf("error = %q\n     want %q", msg, tc.want)
			}
			if tc.key == "c.yml" {
				wantKeyError(t, err, env["CONFIG_FILE"], "")
			} else {
				wantKeyError(t, err, tc.key, "")
			}
		})
	}
}

func TestValidateNormalizes(t *testing.T) {
	t.Parallel()
	ca := testCAFile(t)
	file := writeFile(t, "c.yml", `
registries:
  - host: Registry.Local:5000
    endpoint: HTTPS://10.0.0.5:5443/
    caFile: `+ca+`
    tokenRealms: [auth.registry.local, "[fd00::1]:8443"]
  - host: '[fd00::2]:5000'
    namespace: v6.local
storage:
  filesystem: {}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
`)
	c, err := Load([]string{"--cache-dir", "/c"}, envMap(map[string]string{"CONFIG_FILE": file}))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Registries[0]
	for _, tc := range []struct{ name, got, want string }{
		{"host lower-cased", r.Host, "registry.local:5000"},
		{"namespace default", r.Namespace, "registry.local_5000"},
		{"endpoint without slash", r.Endpoint, "https://10.0.0.5:5443"},
		{"ipv6 host", c.Registries[1].Host, "[fd00::2]:5000"},
		{"storage driver only", strings.Join(mapKeys(c.Storage), ","), "filesystem"},
		{"rootdirectory from cacheDir", c.Storage["filesystem"]["rootdirectory"].(string), "/c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	// The two below share c (Validate writes it): they run in order.
	t.Run("idempotent", func(t *testing.T) {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if c.Registries[0].Host != "registry.local:5000" {
			t.Errorf("host = %q", c.Registries[0].Host)
		}
	})
	t.Run("StorageDriver", func(t *testing.T) {
		name, params := c.StorageDriver()
		if name != "filesystem" || params["rootdirectory"] != "/c" {
			t.Errorf("StorageDriver() = %q, %v", name, params)
		}
	})
}

func TestValidateStorage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		want map[string]map[string]any
	}{
		{"explicit rootdirectory kept", "storage:\n  filesystem:\n    rootdirectory: /data\n",
			map[string]map[string]any{"filesystem": {"rootdirectory": "/data"}}},
		{"null filesystem gets cacheDir", "storage:\n  filesystem:\n",
			map[string]map[string]any{"filesystem": {"rootdirectory": "/c"}}},
		{"inmemory", "storage:\n  inmemory:\n",
			map[string]map[string]any{"inmemory": {}}},
		{"s3 parameters passed through", "storage:\n  s3:\n    bucket: b\n    forcepathstyle: true\n    secure: false\n",
			map[string]map[string]any{"s3": {"bucket": "b", "forcepathstyle": true, "secure": false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, "c.yml", tc.yaml)
			c, err := Load([]string{"--cache-dir", "/c"}, envMap(map[string]string{"CONFIG_FILE": file}))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.Storage, tc.want; !equalStorage(got, want) {
				t.Errorf("storage = %#v, want %#v", got, want)
			}
		})
	}
}

func TestValidateHandBuilt(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Registries = []Registry{{Host: "reg.example", Endpoint: "ftp://x"}}
	c.CacheDir, c.CADir = "/c", "/ca"
	wantKeyError(t, c.Validate(), "registries[0].endpoint", "")
}

func mapKeys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func equalStorage(a, b map[string]map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, pa := range a {
		pb, ok := b[k]
		if !ok || len(pa) != len(pb) {
			return false
		}
		for pk, v := range pa {
			if pb[pk] != v {
				return false
			}
		}
	}
	return true
}

// TestReplicaSettings: a replica's settings load from env, flags and
// YAML, storage.redirect in both spellings.
func TestReplicaSettings(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "c.yml", "storage:\n  s3: {bucket: b, region: r}\n  redirect: {disable: false}\nredis:\n  db: 2\n")
	c, err := Load([]string{"--redis-addr", "redis:6379", "--advertise", "http://10.1.2.3:3128"},
		envMap(map[string]string{"CONFIG_FILE": file, "CLUSTER_SECRET": "0123456789abcdef", "REDIS_PASSWORD": "pw", "REDIS_PREFIX": "team-a"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Redis{Addr: "redis:6379", Password: "pw", DB: 2, Prefix: "team-a"}
	if c.Redis != want || c.Cluster.Advertise != "http://10.1.2.3:3128" || c.Cluster.Secret != "0123456789abcdef" || !c.StorageRedirect {
		t.Errorf("got redis %+v, cluster %+v, redirect %v", c.Redis, c.Cluster, c.StorageRedirect)
	}
	if name := c.StorageDriverName(); name != "s3" {
		t.Errorf("driver %q, want s3 (redirect is no driver)", name)
	}
}
