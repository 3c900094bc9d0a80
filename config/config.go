package config

import (
	"regexp"
	"time"
)

// Config is the whole configuration of the proxy, after defaults, the YAML
// file, the environment and the flags were applied (in that order of
// increasing precedence).
type Config struct {
	// Listen is the main listener address, host:port (--listen, LISTEN,
	// YAML listen; default ":3128"). Port 0 picks a free port.
	Listen string `yaml:"listen"`
	// MetricsListen is an extra listener serving only /metrics, /healthz,
	// /readyz and POST /_admin/gc, host:port (--metrics-listen, METRICS_LISTEN, YAML
	// metricsListen; default empty: off). They are on the main listener
	// in any case.
	MetricsListen string `yaml:"metricsListen"`
	// CacheDir is the filesystem cache root (--cache-dir, CACHE_DIRECTORY,
	// YAML cacheDir). It is the filesystem driver's root directory unless
	// storage.filesystem.rootdirectory says otherwise. Default
	// <os.UserCacheDir>/container-registry-proxy (<os.TempDir> when there
	// is no user cache directory); the container image sets
	// CACHE_DIRECTORY=/registry_proxy_mirror_cache.
	CacheDir string `yaml:"cacheDir"`
	// CADir holds ca.crt and ca.key for the shim (--ca-dir, CA_DIRECTORY,
	// YAML caDir). Default <os.UserConfigDir>/container-registry-proxy/ca
	// (<os.TempDir> when there is no user config directory).
	CADir string `yaml:"caDir"`
	// LogFormat is "text" or "json" (--log-format, LOG_FORMAT, YAML logFormat).
	LogFormat string `yaml:"logFormat"`
	// Debug turns on debug logs (--debug, DEBUG, YAML debug).
	Debug bool `yaml:"debug"`
	// DockerHub enables Docker Hub as an upstream (default true;
	// --no-docker-hub, DOCKER_HUB=false, YAML dockerHub).
	DockerHub bool `yaml:"dockerHub"`
	// AllowPush lets pushes to intercepted registries pass through to
	// upstream; otherwise they get 405 (--allow-push, ALLOW_PUSH, YAML
	// allowPush).
	AllowPush bool `yaml:"allowPush"`
	// Registries are the configured upstreams: YAML registries plus the
	// hosts of REGISTRIES or --registries (which add entries with no
	// endpoint, skipping hosts already listed). When neither the YAML nor
	// REGISTRIES/--registries names any, the original project's default
	// "k8s.gcr.io gcr.io quay.io" applies. After Validate every Host is
	// canonical (lower case; Docker Hub's aliases are "docker.io") and every
	// Namespace is set. Docker Hub needs no entry here: see Upstreams.
	Registries []Registry `yaml:"registries"`
	// ManifestCache holds the tag TTL tiers.
	ManifestCache ManifestCache `yaml:"manifestCache"`
	// Upstream holds settings for every upstream connection.
	Upstream Upstream `yaml:"upstream"`
	// Cache holds size bounds (parsed and validated; enforced by eviction).
	Cache Cache `yaml:"cache"`
	// FillTimeout bounds one blob download from upstream (YAML fillTimeout,
	// FILL_TIMEOUT; default 30m).
	FillTimeout Duration `yaml:"fillTimeout"`
	// MaxFills bounds the blob downloads from upstream in flight, all
	// upstreams together, and MaxFillsPerUpstream those from one upstream
	// (YAML maxFills, maxFillsPerUpstream; MAX_FILLS,
	// MAX_FILLS_PER_UPSTREAM; defaults 256 and 64): a pull that would
	// start one more is answered 503 with Retry-After.
	MaxFills            int `yaml:"maxFills"`
	MaxFillsPerUpstream int `yaml:"maxFillsPerUpstream"`
	// OutageHold is how long, after a tag revalidation failed because
	// upstream was unreachable or answered 5xx/429, that upstream's cached
	// tags are answered stale without asking it (YAML outageHold,
	// OUTAGE_HOLD; default 10s; 0 asks on every pull).
	OutageHold Duration `yaml:"outageHold"`
	// ShutdownGrace bounds a graceful shutdown (SIGTERM, SIGINT): requests
	// and fills in progress may finish within it, then connections are
	// closed and unfinished fills abandoned, nothing partial kept (YAML
	// shutdownGrace, SHUTDOWN_GRACE; default 30s).
	ShutdownGrace Duration `yaml:"shutdownGrace"`
	// RateLimit holds the upstream rate-limit awareness settings.
	RateLimit RateLimit `yaml:"rateLimit"`
	// TagList bounds the tag lists gathered from upstream.
	TagList TagList `yaml:"tagList"`
	// Client holds the client-side timeouts of the listener.
	Client Client `yaml:"client"`
	// Connect holds the CONNECT shim's tunnel settings.
	Connect Connect `yaml:"connect"`
	// ProxyRequestBuffering buffers a pushed body (on disk) before it is
	// forwarded upstream; false streams it (PROXY_REQUEST_BUFFERING, YAML
	// proxyRequestBuffering; default true).
	ProxyRequestBuffering bool `yaml:"proxyRequestBuffering"`
	// AuthRegistries are the original project's AUTH_REGISTRIES entries
	// (env only): credentials per registry or token realm host.
	AuthRegistries []AuthEntry `yaml:"-"`
	// DockerConfig is a Docker config.json whose auths, credHelpers and
	// credsStore supply upstream credentials (--docker-config,
	// DOCKER_CONFIG_FILE, YAML dockerConfig).
	DockerConfig string `yaml:"dockerConfig"`
	// AllowOwnAuth sends a client's own Authorization upstream instead of
	// the injected credentials (ALLOW_OWN_AUTH, YAML allowOwnAuth).
	AllowOwnAuth bool `yaml:"allowOwnAuth"`
	// AllowPushWithOwnAuth is ALLOW_PUSH_WITH_OWN_AUTH: pushes through
	// the shim with the client's own credentials even when ALLOW_PUSH is
	// false (YAML allowPushWithOwnAuth).
	AllowPushWithOwnAuth bool `yaml:"allowPushWithOwnAuth"`
	// ClientAuth is how clients authenticate to the proxy.
	ClientAuth ClientAuth `yaml:"clientAuth"`
	// DefaultAccessMode is the access mode of registries with injected
	// credentials that do not set access.mode (DEFAULT_ACCESS_MODE, YAML
	// defaultAccessMode; default authenticated). Registries without
	// credentials are public unless they say otherwise.
	DefaultAccessMode string `yaml:"defaultAccessMode"`
	// Storage is distribution's storage configuration shape: exactly one
	// driver name mapped to its parameters, e.g.
	// {"filesystem": {"rootdirectory": "/x"}} or {"s3": {...}}. Default
	// (and rootdirectory when the filesystem driver has none): CacheDir.
	// distribution's non-driver keys (cache, maintenance, redirect, delete)
	// are dropped.
	Storage map[string]map[string]any `yaml:"storage"`
	// StorageRedirect (storage.redirect: true) answers blob hits with a
	// 307 to a presigned URL of the storage driver (S3, GCS, Azure), so
	// the bytes go from the bucket to the client. Off by default; drivers
	// without redirects (filesystem, inmemory) serve the bytes themselves.
	StorageRedirect bool `yaml:"-"`
	// Redis is the shared state of several replicas (docs/scaling.md).
	// Without an address a replica keeps its embedded index.
	Redis Redis `yaml:"redis"`
	// Cluster is how replicas sharing one Redis reach each other.
	Cluster Cluster `yaml:"cluster"`
	// Status holds the status page's settings.
	Status Status `yaml:"status"`
	// Admin holds the admin endpoints' settings.
	Admin Admin `yaml:"admin"`

	// src maps a setting's YAML path ("manifestCache.primaryTime") to the
	// key the user wrote it under (the YAML path, an environment variable or
	// a flag), so that Validate names the right one. Nil for a Config built
	// by hand: then YAML paths are used.
	src map[string]string
}

// Redis says where the replicas' shared state lives.
type Redis struct {
	// Addr is the Redis server's host:port (flag --redis-addr, env
	// REDIS_ADDR). Empty: no Redis, the embedded index.
	Addr string `yaml:"addr"`
	// Password (env REDIS_PASSWORD).
	Password string `yaml:"password"`
	// DB is the database number (env REDIS_DB). Default 0.
	DB int `yaml:"db"`
	// Prefix starts every key, so several caches share one Redis (env
	// REDIS_PREFIX). Default "crp".
	Prefix string `yaml:"prefix"`
}

// Cluster says how replicas reach each other.
type Cluster struct {
	// Advertise is the URL at which the other replicas reach this one
	// (flag --advertise, env CLUSTER_ADVERTISE), e.g.
	// http://$(POD_IP):3128. Empty: this replica shares the index but
	// never fills for others nor streams their fills.
	Advertise string `yaml:"advertise"`
	// Secret authenticates requests between replicas (env
	// CLUSTER_SECRET); required with Advertise.
	Secret string `yaml:"secret"`
}

// Registry is one upstream registry.
type Registry struct {
	// Host is the name clients use, port included when not 443: a DNS name
	// or IP (IPv6 in brackets), no scheme, no path. Validate lower-cases it,
	// drops ":443" and maps Docker Hub's aliases to DockerHubHost.
	Host string `yaml:"host"`
	// Namespace is the path alias in mirror URLs (/v2/<namespace>/<repo>/…),
	// a reference path component without ':' or '/' (default: Host with
	// ':' → '_', e.g. registry.local_5000).
	Namespace string `yaml:"namespace"`
	// Endpoint is the URL to connect to instead of https://Host: http or
	// https, no path (Validate drops a trailing "/"). Empty: https://Host
	// (for Docker Hub: https://registry-1.docker.io).
	Endpoint string `yaml:"endpoint"`
	// CAFile is an extra CA bundle (PEM certificates, checked by Validate)
	// trusted for this upstream; a relative path is relative to the working
	// directory.
	CAFile string `yaml:"caFile"`
	// Insecure allows plain HTTP or unverified TLS towards this upstream.
	Insecure bool `yaml:"insecure"`
	// Username is the user name used towards upstream (Basic, or towards
	// the token realm); set together with Password.
	Username string `yaml:"username"`
	// Password is Username's password or token.
	Password string `yaml:"password"`
	// PasswordFile is a file holding Username's password (one trailing
	// newline dropped), e.g. a mounted Kubernetes secret; read again when
	// it changes. Exclusive with Password; must be readable at start.
	PasswordFile string `yaml:"passwordFile"`
	// Access is who may read this registry's cached content.
	Access Access `yaml:"access"`
	// TokenRealms lists extra hosts (host[:port]) allowed as Bearer token
	// realms besides the registry's own domain.
	TokenRealms []string `yaml:"tokenRealms"`
	// AllowNetworks are CIDRs (or IPs) that this registry's redirect hops
	// and token realms may reach although they are internal, besides
	// upstream.allowNetworks.
	AllowNetworks []string `yaml:"allowNetworks"`

	// from is the key that added this entry when it did not come from the
	// YAML list ("REGISTRIES", "--registries"), for error messages.
	from string
}

// ManifestCache is the original project's tag caching settings: a tag
// matching PrimaryRegex is trusted for PrimaryTime, else one matching
// SecondaryRegex for SecondaryTime, else DefaultTime (see TTL). The regexes
// are the seed's nginx location fragments placed right after /manifests/:
// anchored at the tag's start, not at its end. An empty regex disables its
// tier.
type ManifestCache struct {
	// Enabled turns tag caching on (ENABLE_MANIFEST_CACHE; default false:
	// every tag is revalidated).
	Enabled bool `yaml:"enabled"`
	// PrimaryRegex is the first tier (MANIFEST_CACHE_PRIMARY_REGEX).
	PrimaryRegex string `yaml:"primaryRegex"`
	// PrimaryTime is the first tier's TTL (MANIFEST_CACHE_PRIMARY_TIME).
	PrimaryTime Duration `yaml:"primaryTime"`
	// SecondaryRegex is the second tier (MANIFEST_CACHE_SECONDARY_REGEX).
	SecondaryRegex string `yaml:"secondaryRegex"`
	// SecondaryTime is the second tier's TTL (MANIFEST_CACHE_SECONDARY_TIME).
	SecondaryTime Duration `yaml:"secondaryTime"`
	// DefaultTime is every other tag's TTL (MANIFEST_CACHE_DEFAULT_TIME).
	DefaultTime Duration `yaml:"defaultTime"`
	// RevalidateWait bounds how long a pull of a cached tag waits for its
	// revalidation upstream before the cached copy is answered stale and
	// the revalidation finishes in the background
	// (MANIFEST_CACHE_REVALIDATE_WAIT; default 2s; 0 waits for upstream).
	// It applies whether or not Enabled is set.
	RevalidateWait Duration `yaml:"revalidateWait"`

	// Primary is PrimaryRegex compiled as "^(?:" + PrimaryRegex + ")", set
	// by Validate; nil when the tier is disabled.
	Primary *regexp.Regexp `yaml:"-"`
	// Secondary is SecondaryRegex compiled like Primary, set by Validate.
	Secondary *regexp.Regexp `yaml:"-"`
}

// Upstream holds connection settings shared by all upstreams.
type Upstream struct {
	// VerifySSL verifies upstream TLS certificates (VERIFY_SSL; default
	// true). A registry's own insecure setting overrides it for that host.
	VerifySSL bool `yaml:"verifySSL"`
	// ForceHTTP11 disables h2 towards upstream (FORCE_UPSTREAM_HTTP_1_1).
	ForceHTTP11 bool `yaml:"forceHTTP11"`
	// ConnectTimeout bounds dialling upstream (PROXY_CONNECT_TIMEOUT, 60s).
	ConnectTimeout Duration `yaml:"connectTimeout"`
	// ReadTimeout bounds waiting for upstream's response headers and each
	// read of its body (PROXY_READ_TIMEOUT, 60s).
	ReadTimeout Duration `yaml:"readTimeout"`
	// SendTimeout bounds each write of a request body to upstream
	// (PROXY_SEND_TIMEOUT, 60s).
	SendTimeout Duration `yaml:"sendTimeout"`
	// AllowNetworks are CIDRs (or IPs) that every upstream's redirect
	// hops and token realms may reach although they are internal
	// (private, loopback, link-local, …) — blob storage on a private
	// network (UPSTREAM_ALLOW_NETWORKS). A registry's endpoint is always
	// reachable at its own address and port.
	AllowNetworks []string `yaml:"allowNetworks"`
}

// Cache holds the cache's bounds (nginx sizes and durations).
type Cache struct {
	// MaxSize is the cache's upper bound; least recently used blobs go
	// first (CACHE_MAX_SIZE, 32g).
	MaxSize Size `yaml:"maxSize"`
	// MinFree is the disk space to keep free (CACHE_MIN_FREE, 1g; 0 turns
	// the check off).
	MinFree Size `yaml:"minFree"`
	// InactiveTime removes blobs unused this long (CACHE_INACTIVE_TIME, 60d).
	InactiveTime Duration `yaml:"inactiveTime"`
}

// RateLimit is how the proxy spares upstreams' rate limits (Docker Hub's
// ratelimit-limit and ratelimit-remaining headers).
type RateLimit struct {
	// MinRemaining postpones tag revalidation for an upstream whose last
	// ratelimit-remaining is below it, until the window the header names
	// (w=, default 6h) resets: cached tags are answered stale meanwhile
	// (RATE_LIMIT_MIN_REMAINING, YAML rateLimit.minRemaining; default 10;
	// 0 turns it off).
	MinRemaining int `yaml:"minRemaining"`
}

// TagList bounds one tags/list answer gathered from upstream over all its
// pages: a list past either bound is answered 502 and not stored.
type TagList struct {
	// MaxBytes bounds the bytes read from upstream for one list
	// (TAG_LIST_MAX_BYTES, YAML tagList.maxBytes; default 16m).
	MaxBytes Size `yaml:"maxBytes"`
	// MaxTags bounds its tags (TAG_LIST_MAX_TAGS, YAML tagList.maxTags;
	// default 100000).
	MaxTags int `yaml:"maxTags"`
}

// AuthEntry is one AUTH_REGISTRIES entry: credentials used towards Host,
// a registry host or its token realm's host (auth.docker.io, gitlab.com).
type AuthEntry struct {
	Host, Username, Password string
}

// Access is a registry's access mode for cached content.
type Access struct {
	// Mode is public (anyone who reaches the proxy), authenticated (any
	// proxy user), users (the listed proxy users) or upstream (the client's
	// own credentials must be accepted by the registry). Default: public
	// for registries without injected credentials, authenticated for
	// registries with them.
	Mode string `yaml:"mode"`
	// Users are the proxy users allowed in mode users.
	Users []string `yaml:"users"`
}

// ClientAuth is how clients authenticate to the proxy itself.
type ClientAuth struct {
	// Htpasswd is a file of user:bcrypt-hash lines (--htpasswd, HTPASSWD,
	// YAML clientAuth.htpasswd).
	Htpasswd string `yaml:"htpasswd"`
	// RequireForConnect answers 407 to CONNECT requests without valid
	// Proxy-Authorization (YAML clientAuth.requireForConnect).
	RequireForConnect bool `yaml:"requireForConnect"`
	// UpstreamCheckTTL is how long a positive upstream access check is
	// remembered per client and repository (YAML clientAuth.upstreamCheckTTL;
	// default 5m).
	UpstreamCheckTTL Duration `yaml:"upstreamCheckTTL"`
	// MaxFailedLogins is how many refused logins a client address may make
	// per minute before its credentials are answered 429 unchecked until
	// the minute ends (YAML clientAuth.maxFailedLogins; default 10; 0 turns
	// the limit off).
	MaxFailedLogins int `yaml:"maxFailedLogins"`
}

// Status holds the status page's settings.
type Status struct {
	// ShowRepositories lists repository names on the status page (the
	// most pulled ones, and those of downloads in flight); false shows
	// the registries only (YAML status.showRepositories,
	// STATUS_SHOW_REPOSITORIES; default true).
	ShowRepositories bool `yaml:"showRepositories"`
}

// Admin holds the admin endpoints' settings (POST /_admin/gc).
type Admin struct {
	// Token is the bearer token the admin endpoints require on the main
	// listener (YAML admin.token, ADMIN_TOKEN). Exclusive with TokenFile.
	Token string `yaml:"token"`
	// TokenFile is a file holding Token (one trailing newline dropped),
	// read at start (YAML admin.tokenFile, ADMIN_TOKEN_FILE).
	TokenFile string `yaml:"tokenFile"`
}

// Client holds the nginx-style client-side timeouts.
type Client struct {
	SendTimeout      Duration `yaml:"sendTimeout"`      // SEND_TIMEOUT: silence allowed between two writes to a client
	BodyTimeout      Duration `yaml:"bodyTimeout"`      // CLIENT_BODY_TIMEOUT: silence allowed between two reads of a request body
	HeaderTimeout    Duration `yaml:"headerTimeout"`    // CLIENT_HEADER_TIMEOUT: time to read request headers
	KeepaliveTimeout Duration `yaml:"keepaliveTimeout"` // KEEPALIVE_TIMEOUT: idle keep-alive connections
}

// Connect holds the CONNECT tunnel settings of the shim.
type Connect struct {
	ConnectTimeout Duration `yaml:"connectTimeout"` // PROXY_CONNECT_CONNECT_TIMEOUT
	ReadTimeout    Duration `yaml:"readTimeout"`    // PROXY_CONNECT_READ_TIMEOUT
	SendTimeout    Duration `yaml:"sendTimeout"`    // PROXY_CONNECT_SEND_TIMEOUT
	// AllowPorts are the ports tunnels may reach (default [443]).
	AllowPorts []int `yaml:"allowPorts"`
	// AllowNetworks are CIDRs that tunnels may reach although they are
	// denied by default (loopback, link-local, unspecified, metadata).
	AllowNetworks []string `yaml:"allowNetworks"`
}

// Duration is a time.Duration read in nginx syntax (10m, 60d, 1h30m).
type Duration time.Duration

// Size is a byte count read in nginx syntax (32g, 100m, 512k).
type Size int64

// DockerHubHost is the canonical host of Docker Hub's entry in Registries;
// "index.docker.io" and "registry-1.docker.io" are read as this host.
const DockerHubHost = "docker.io"

// dockerHubAliases are the names that mean Docker Hub.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// DefaultRegistries is the original project's REGISTRIES default, used when
// neither the YAML file nor REGISTRIES/--registries lists any registry.
const DefaultRegistries = "k8s.gcr.io gcr.io quay.io"

// Default returns the built-in defaults, before any file, environment or
// flag; CacheDir, CADir and Storage are left empty (Load derives them from
// the user's directories), regexes are not compiled yet (Validate does).
func Default() *Config {
	return &Config{
		Listen:    ":3128",
		LogFormat: "text",
		DockerHub: true,
		ManifestCache: ManifestCache{
			PrimaryRegex:   `(stable|nightly|production|test)`,
			PrimaryTime:    Duration(10 * time.Minute),
			SecondaryRegex: `(.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+`,
			SecondaryTime:  Duration(60 * 24 * time.Hour),
			DefaultTime:    Duration(time.Hour),
			RevalidateWait: Duration(2 * time.Second),
		},
		Upstream: Upstream{
			VerifySSL:      true,
			ConnectTimeout: Duration(60 * time.Second),
			ReadTimeout:    Duration(60 * time.Second),
			SendTimeout:    Duration(60 * time.Second),
		},
		Cache: Cache{
			MaxSize:      Size(32 << 30),
			MinFree:      Size(1 << 30),
			InactiveTime: Duration(60 * 24 * time.Hour),
		},
		FillTimeout:   Duration(30 * time.Minute),
		OutageHold:    Duration(10 * time.Second),
		ShutdownGrace: Duration(30 * time.Second),

		MaxFills:            256,
		MaxFillsPerUpstream: 64,

		Client: Client{
			SendTimeout:      Duration(60 * time.Second),
			BodyTimeout:      Duration(60 * time.Second),
			HeaderTimeout:    Duration(60 * time.Second),
			KeepaliveTimeout: Duration(300 * time.Second),
		},
		Connect: Connect{
			ConnectTimeout: Duration(60 * time.Second),
			ReadTimeout:    Duration(60 * time.Second),
			SendTimeout:    Duration(60 * time.Second),
			AllowPorts:     []int{443},
		},
		ProxyRequestBuffering: true,
		RateLimit:             RateLimit{MinRemaining: 10},
		TagList:               TagList{MaxBytes: Size(16 << 20), MaxTags: 100000},
		Redis:                 Redis{Prefix: "crp"},
		ClientAuth:            ClientAuth{UpstreamCheckTTL: Duration(5 * time.Minute), MaxFailedLogins: 10},
		Status:                Status{ShowRepositories: true},
	}
}

// Upstreams returns every upstream to serve: Registries, plus a plain Docker
// Hub entry (Host and Namespace "docker.io") when DockerHub is on and
// Registries has none. Call it after Validate, which canonicalizes hosts.
func (c *Config) Upstreams() []Registry {
	out := make([]Registry, 0, len(c.Registries)+1)
	hub := false
	for _, r := range c.Registries {
		if canonicalHost(r.Host) == DockerHubHost {
			if !c.DockerHub {
				continue
			}
			hub = true
		}
		out = append(out, r)
	}
	if c.DockerHub && !hub {
		out = append(out, Registry{Host: DockerHubHost, Namespace: DockerHubHost})
	}
	return out
}

// Namespaces maps the canonical host of every served registry (Upstreams)
// to its mirror path alias.
func (c *Config) Namespaces() map[string]string {
	out := map[string]string{}
	for _, r := range c.Upstreams() {
		out[canonicalHost(r.Host)] = r.Namespace
	}
	return out
}

// keyFor returns the key the user wrote the setting at YAML path p under.
func (c *Config) keyFor(p string) string {
	if k, ok := c.src[p]; ok {
		return k
	}
	return p
}

// setSource records that the setting at YAML path p came from key.
func (c *Config) setSource(p, key string) {
	if c.src == nil {
		c.src = map[string]string{}
	}
	c.src[p] = key
}
