package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/pflag"
)

// appName names the default directories.
const appName = "container-registry-proxy"

// Load builds the configuration from, in increasing precedence: the
// defaults, the YAML file (--config or CONFIG_FILE), the environment (the
// original project's variable names; empty values count as unset) and the
// flags that were set on the command line. It then derives what nothing
// set (CacheDir, CADir, Storage) and calls Validate.
//
// args are the command-line arguments without the program name (and
// without any subcommand): positional arguments are an error. env looks up
// one variable: os.Getenv in production, a map lookup in tests; nil means an
// empty environment. With --help or -h Load returns pflag.ErrHelp (print
// Usage and exit 0); any other error is one line naming the key, in general
// a *KeyError (exit 2).
func Load(args []string, env func(string) string) (*Config, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	var fv flagValues
	fset := newFlagSet(&fv)
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, pflag.ErrHelp
		}
		return nil, err // pflag's errors are one line naming the flag
	}
	if fset.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are given as --flags)", fset.Arg(0))
	}

	c := Default()
	file, fileKey := fv.config, "--config"
	if !fset.Changed("config") {
		file, fileKey = env("CONFIG_FILE"), "CONFIG_FILE"
	}
	if file != "" {
		data, err := readSetting(file)
		if err != nil {
			return nil, &KeyError{Key: fileKey, Value: file, Err: err}
		}
		if err := decodeYAML(c, data, file); err != nil {
			return nil, err
		}
	}
	yamlRegistries := c.Registries != nil

	if err := applyEnv(c, env); err != nil {
		return nil, err
	}
	applyFlags(c, fset, &fv)

	switch {
	case fset.Changed("registries"):
		addRegistries(c, splitHosts(strings.Join(fv.registries, " ")), "--registries")
	case env("REGISTRIES") != "":
		addRegistries(c, splitHosts(env("REGISTRIES")), "REGISTRIES")
	case !yamlRegistries:
		addRegistries(c, splitHosts(DefaultRegistries), "REGISTRIES")
	}

	if c.CacheDir == "" {
		c.CacheDir = defaultDir(os.UserCacheDir, appName)
	}
	if c.CADir == "" {
		c.CADir = defaultDir(os.UserConfigDir, appName, "ca")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// envSetting binds one environment variable to the setting at a YAML path.
type envSetting struct {
	name, path string
	set        func(string) error
}

// applyEnv applies the environment variables that are set (non-empty).
func applyEnv(c *Config, env func(string) string) error {
	for _, s := range envSettings(c) {
		v := env(s.name)
		if v == "" {
			continue
		}
		if err := s.set(v); err != nil {
			return &KeyError{Key: s.name, Value: v, Err: err}
		}
		c.setSource(s.path, s.name)
	}
	return applyAuthRegistries(c, env)
}

// envSettings binds the original project's variables (and ours) to c's
// fields. AUTH_REGISTRIES, REGISTRIES and CONFIG_FILE are read apart.
func envSettings(c *Config) []envSetting {
	m, u := &c.ManifestCache, &c.Upstream
	return []envSetting{
		{"LISTEN", "listen", setString(&c.Listen)},
		{"METRICS_LISTEN", "metricsListen", setString(&c.MetricsListen)},
		{"RATE_LIMIT_MIN_REMAINING", "rateLimit.minRemaining", setInt(&c.RateLimit.MinRemaining)},
		{"CACHE_DIRECTORY", "cacheDir", setString(&c.CacheDir)},
		{"CA_DIRECTORY", "caDir", setString(&c.CADir)},
		{"LOG_FORMAT", "logFormat", setString(&c.LogFormat)},
		{"DEBUG", "debug", setBool(&c.Debug)},
		{"DOCKER_HUB", "dockerHub", setBool(&c.DockerHub)},
		{"ALLOW_PUSH", "allowPush", setBool(&c.AllowPush)},
		{"ENABLE_MANIFEST_CACHE", "manifestCache.enabled", setBool(&m.Enabled)},
		{"MANIFEST_CACHE_PRIMARY_REGEX", "manifestCache.primaryRegex", setString(&m.PrimaryRegex)},
		{"MANIFEST_CACHE_PRIMARY_TIME", "manifestCache.primaryTime", setDuration(&m.PrimaryTime)},
		{"MANIFEST_CACHE_SECONDARY_REGEX", "manifestCache.secondaryRegex", setString(&m.SecondaryRegex)},
		{"MANIFEST_CACHE_SECONDARY_TIME", "manifestCache.secondaryTime", setDuration(&m.SecondaryTime)},
		{"MANIFEST_CACHE_DEFAULT_TIME", "manifestCache.defaultTime", setDuration(&m.DefaultTime)},
		{"MANIFEST_CACHE_REVALIDATE_WAIT", "manifestCache.revalidateWait", setDuration(&m.RevalidateWait)},
		{"CACHE_MAX_SIZE", "cache.maxSize", setSize(&c.Cache.MaxSize)},
		{"CACHE_MIN_FREE", "cache.minFree", setSize(&c.Cache.MinFree)},
		{"CACHE_INACTIVE_TIME", "cache.inactiveTime", setDuration(&c.Cache.InactiveTime)},
		{"TAG_LIST_MAX_BYTES", "tagList.maxBytes", setSize(&c.TagList.MaxBytes)},
		{"TAG_LIST_MAX_TAGS", "tagList.maxTags", setInt(&c.TagList.MaxTags)},
		{"VERIFY_SSL", "upstream.verifySSL", setBool(&u.VerifySSL)},
		{"FORCE_UPSTREAM_HTTP_1_1", "upstream.forceHTTP11", setBool(&u.ForceHTTP11)},
		{"PROXY_CONNECT_TIMEOUT", "upstream.connectTimeout", setDuration(&u.ConnectTimeout)},
		{"PROXY_READ_TIMEOUT", "upstream.readTimeout", setDuration(&u.ReadTimeout)},
		{"PROXY_SEND_TIMEOUT", "upstream.sendTimeout", setDuration(&u.SendTimeout)},
		{"UPSTREAM_ALLOW_NETWORKS", "upstream.allowNetworks", setList(&u.AllowNetworks)},
		{"FILL_TIMEOUT", "fillTimeout", setDuration(&c.FillTimeout)},
		{"MAX_FILLS", "maxFills", setInt(&c.MaxFills)},
		{"MAX_FILLS_PER_UPSTREAM", "maxFillsPerUpstream", setInt(&c.MaxFillsPerUpstream)},
		{"OUTAGE_HOLD", "outageHold", setDuration(&c.OutageHold)},
		{"SHUTDOWN_GRACE", "shutdownGrace", setDuration(&c.ShutdownGrace)},
		{"PROXY_REQUEST_BUFFERING", "proxyRequestBuffering", setBool(&c.ProxyRequestBuffering)},
		{"SEND_TIMEOUT", "client.sendTimeout", setDuration(&c.Client.SendTimeout)},
		{"CLIENT_BODY_TIMEOUT", "client.bodyTimeout", setDuration(&c.Client.BodyTimeout)},
		{"CLIENT_HEADER_TIMEOUT", "client.headerTimeout", setDuration(&c.Client.HeaderTimeout)},
		{"KEEPALIVE_TIMEOUT", "client.keepaliveTimeout", setDuration(&c.Client.KeepaliveTimeout)},
		{"PROXY_CONNECT_CONNECT_TIMEOUT", "connect.connectTimeout", setDuration(&c.Connect.ConnectTimeout)},
		{"PROXY_CONNECT_READ_TIMEOUT", "connect.readTimeout", setDuration(&c.Connect.ReadTimeout)},
		{"PROXY_CONNECT_SEND_TIMEOUT", "connect.sendTimeout", setDuration(&c.Connect.SendTimeout)},
		{"DOCKER_CONFIG_FILE", "dockerConfig", setString(&c.DockerConfig)},
		{"DEFAULT_ACCESS_MODE", "defaultAccessMode", setString(&c.DefaultAccessMode)},
		{"ALLOW_OWN_AUTH", "allowOwnAuth", setBool(&c.AllowOwnAuth)},
		{"ALLOW_PUSH_WITH_OWN_AUTH", "allowPushWithOwnAuth", setBool(&c.AllowPushWithOwnAuth)},
		{"HTPASSWD", "clientAuth.htpasswd", setString(&c.ClientAuth.Htpasswd)},
		{"REDIS_ADDR", "redis.addr", setString(&c.Redis.Addr)},
		{"REDIS_PASSWORD", "redis.password", setString(&c.Redis.Password)},
		{"REDIS_DB", "redis.db", setInt(&c.Redis.DB)},
		{"REDIS_PREFIX", "redis.prefix", setString(&c.Redis.Prefix)},
		{"CLUSTER_ADVERTISE", "cluster.advertise", setString(&c.Cluster.Advertise)},
		{"CLUSTER_SECRET", "cluster.secret", setString(&c.Cluster.Secret)},
		{"STORAGE_REDIRECT", "storage.redirect", setBool(&c.StorageRedirect)},
		{"STATUS_SHOW_REPOSITORIES", "status.showRepositories", setBool(&c.Status.ShowRepositories)},
		{"ADMIN_TOKEN", "admin.token", setString(&c.Admin.Token)},
		{"ADMIN_TOKEN_FILE", "admin.tokenFile", setString(&c.Admin.TokenFile)},
	}
}

// The setters of envSettings: each parses a variable's value into *p.

func setString(p *string) func(string) error {
	return func(s string) error { *p = s; return nil }
}

func setBool(p *bool) func(string) error {
	return func(s string) error {
		v, err := parseBool(s)
		if err != nil {
			return err
		}
		*p = v
		return nil
	}
}

func setInt(p *int) func(string) error {
	return func(s string) error {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return errors.New("not a whole number")
		}
		*p = v
		return nil
	}
}

func setDuration(p *Duration) func(string) error {
	return func(s string) error {
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*p = Duration(v)
		return nil
	}
}

// setList reads a list separated by spaces or commas.
func setList(p *[]string) func(string) error {
	return func(s string) error {
		*p = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		return nil
	}
}

func setSize(p *Size) func(string) error {
	return func(s string) error {
		v, err := ParseSize(s)
		if err != nil {
			return err
		}
		*p = Size(v)
		return nil
	}
}

// applyAuthRegistries reads AUTH_REGISTRIES with its two delimiter
// variables (defaults: space between entries, ":" between fields).
func applyAuthRegistries(c *Config, env func(string) string) error {
	v := env("AUTH_REGISTRIES")
	if v == "" {
		return nil
	}
	entryDelim, fieldDelim := env("AUTH_REGISTRIES_DELIMITER"), env("AUTH_REGISTRY_DELIMITER")
	if entryDelim == "" {
		entryDelim = DefaultAuthRegistriesDelimiter
	}
	if fieldDelim == "" {
		fieldDelim = DefaultAuthRegistryDelimiter
	}
	if strings.Contains(entryDelim, fieldDelim) || strings.Contains(fieldDelim, entryDelim) {
		return &KeyError{Key: "AUTH_REGISTRY_DELIMITER", Value: fieldDelim, Err: fmt.Errorf("must differ from AUTH_REGISTRIES_DELIMITER %q and not contain it", entryDelim)}
	}
	entries, err := parseAuthRegistries(v, entryDelim, fieldDelim)
	if err != nil {
		return err
	}
	c.AuthRegistries = entries
	return nil
}

// applyFlags applies the flags that were set on the command line.
func applyFlags(c *Config, fset *pflag.FlagSet, fv *flagValues) {
	apply := func(name, path string, set func()) {
		if fset.Changed(name) {
			set()
			c.setSource(path, "--"+name)
		}
	}
	apply("listen", "listen", func() { c.Listen = fv.listen })
	apply("metrics-listen", "metricsListen", func() { c.MetricsListen = fv.metricsListen })
	apply("cache-dir", "cacheDir", func() { c.CacheDir = fv.cacheDir })
	apply("ca-dir", "caDir", func() { c.CADir = fv.caDir })
	apply("log-format", "logFormat", func() { c.LogFormat = fv.logFormat })
	apply("debug", "debug", func() { c.Debug = fv.debug })
	apply("no-docker-hub", "dockerHub", func() { c.DockerHub = !fv.noDockerHub })
	apply("allow-push", "allowPush", func() { c.AllowPush = fv.allowPush })
	apply("docker-config", "dockerConfig", func() { c.DockerConfig = fv.dockerConfig })
	apply("htpasswd", "clientAuth.htpasswd", func() { c.ClientAuth.Htpasswd = fv.htpasswd })
	apply("redis-addr", "redis.addr", func() { c.Redis.Addr = fv.redisAddr })
	apply("advertise", "cluster.advertise", func() { c.Cluster.Advertise = fv.advertise })
}

// addRegistries appends an entry with no endpoint for each host not listed
// yet (Docker Hub's aliases count as one host); key is the source, for
// error messages.
func addRegistries(c *Config, hosts []string, key string) {
	seen := map[string]bool{}
	for _, r := range c.Registries {
		seen[canonicalHost(r.Host)] = true
	}
	if c.Registries == nil {
		c.Registries = []Registry{}
	}
	for _, h := range hosts {
		if canon := canonicalHost(h); !seen[canon] {
			seen[canon] = true
			c.Registries = append(c.Registries, Registry{Host: h, from: key})
		}
	}
}

// defaultDir is <base()>/elem..., or <os.TempDir()>/elem... when base fails
// (no $HOME, for instance).
func defaultDir(base func() (string, error), elem ...string) string {
	dir, err := base()
	if err != nil || dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(append([]string{dir}, elem...)...)
}
