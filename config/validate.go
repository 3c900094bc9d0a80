package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// Validate checks every setting and completes the derived ones: it compiles
// the tier regexes into ManifestCache.Primary and Secondary, canonicalizes
// registry hosts and fills in their namespaces, drops distribution's
// non-driver storage keys and fills Storage (or the filesystem driver's
// rootdirectory) from CacheDir. Load calls it; call it yourself after
// changing a Config. The first problem is returned as a *KeyError naming
// the key as the user wrote it (YAML path for a Config built by hand).
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.validateBasics,
		c.validateManifestCache,
		c.validateLimits,
		c.validateTagList,
		c.validateFills,
		c.validateAuth,
		c.validateRegistries,
		c.validateStorage,
		c.validateCluster,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateBasics() error {
	if err := checkListen(c.Listen); err != nil {
		return &KeyError{Key: c.keyFor("listen"), Value: c.Listen, Err: err}
	}
	if c.MetricsListen != "" {
		if err := checkListen(c.MetricsListen); err != nil {
			return &KeyError{Key: c.keyFor("metricsListen"), Value: c.MetricsListen, Err: err}
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return &KeyError{Key: c.keyFor("logFormat"), Value: c.LogFormat, Err: errors.New("want text or json")}
	}
	if c.CacheDir == "" {
		return &KeyError{Key: c.keyFor("cacheDir"), Err: errors.New("must not be empty")}
	}
	if c.CADir == "" {
		return &KeyError{Key: c.keyFor("caDir"), Err: errors.New("must not be empty")}
	}
	return nil
}

// checkListen accepts host:port with an optional host and a numeric port
// (0 picks a free one).
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("%w; want host:port, e.g. :3128", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !isDNSName(host) {
		return fmt.Errorf("%q is not a host name or IP address", host)
	}
	return nil
}

func (c *Config) validateManifestCache() error {
	m := &c.ManifestCache
	if m.RevalidateWait < 0 {
		return &KeyError{Key: c.keyFor("manifestCache.revalidateWait"), Value: m.RevalidateWait.String(), Err: errors.New("must not be negative (0 waits for upstream)")}
	}
	var err error
	if m.Primary, err = c.compileTier("manifestCache.primaryRegex", m.PrimaryRegex); err != nil {
		return err
	}
	m.Secondary, err = c.compileTier("manifestCache.secondaryRegex", m.SecondaryRegex)
	return err
}

// compileTier compiles a tier regex anchored at the tag's start, as the
// seed's nginx location fragment after /manifests/ was; "" disables the
// tier (nil).
func (c *Config) compileTier(path, src string) (*regexp.Regexp, error) {
	if src == "" {
		return nil, nil
	}
	if _, err := regexp.Compile(src); err != nil { // report the user's text, not ours
		return nil, &KeyError{Key: c.keyFor(path), Value: src, Err: err}
	}
	return compileTier(src)
}

// compileTier anchors src at the start of the tag only.
func compileTier(src string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return nil, err
	}
	// From the parsed form, not src: a \Q in src (literal text to its
	// end) would swallow the closing parenthesis of `^(?:` + src + `)`.
	return regexp.Compile(`^(?:` + re.String() + `)`)
}

// validateFills checks the caps on blob downloads in flight.
func (c *Config) validateFills() error {
	for _, k := range []struct {
		path string
		n    int
	}{{"maxFills", c.MaxFills}, {"maxFillsPerUpstream", c.MaxFillsPerUpstream}} {
		if k.n <= 0 {
			return &KeyError{Key: c.keyFor(k.path), Value: strconv.Itoa(k.n), Err: errors.New("must be positive")}
		}
	}
	return nil
}

func (c *Config) validateLimits() error {
	durations := []struct {
		path string
		d    Duration
	}{
		{"manifestCache.primaryTime", c.ManifestCache.PrimaryTime},
		{"manifestCache.secondaryTime", c.ManifestCache.SecondaryTime},
		{"manifestCache.defaultTime", c.ManifestCache.DefaultTime},
		{"upstream.connectTimeout", c.Upstream.ConnectTimeout},
		{"upstream.readTimeout", c.Upstream.ReadTimeout},
		{"upstream.sendTimeout", c.Upstream.SendTimeout},
		{"cache.inactiveTime", c.Cache.InactiveTime},
		{"fillTimeout", c.FillTimeout},
		{"shutdownGrace", c.ShutdownGrace},
		{"client.sendTimeout", c.Client.SendTimeout},
		{"client.bodyTimeout", c.Client.BodyTimeout},
		{"client.headerTimeout", c.Client.HeaderTimeout},
		{"client.keepaliveTimeout", c.Client.KeepaliveTimeout},
		{"connect.connectTimeout", c.Connect.ConnectTimeout},
		{"connect.readTimeout", c.Connect.ReadTimeout},
		{"connect.sendTimeout", c.Connect.SendTimeout},
	}
	for _, d := range durations {
		if d.d <= 0 {
			return &KeyError{Key: c.keyFor(d.path), Value: d.d.String(), Err: errors.New("must be positive")}
		}
	}
	if c.Cache.MaxSize <= 0 {
		return &KeyError{Key: c.keyFor("cache.maxSize"), Value: c.Cache.MaxSize.String(), Err: errors.New("must be positive")}
	}
	if c.OutageHold < 0 {
		return &KeyError{Key: c.keyFor("outageHold"), Value: c.OutageHold.String(), Err: errors.New("must not be negative (0 turns it off)")}
	}
	if c.RateLimit.MinRemaining < 0 {
		return &KeyError{Key: c.keyFor("rateLimit.minRemaining"), Value: strconv.Itoa(c.RateLimit.MinRemaining), Err: errors.New("must not be negative (0 turns it off)")}
	}
	if c.Cache.MinFree < 0 {
		return &KeyError{Key: c.keyFor("cache.minFree"), Value: c.Cache.MinFree.String(), Err: errors.New("must not be negative")}
	}
	switch c.DefaultAccessMode {
	case "", AccessPublic, AccessAuthenticated, AccessUpstream:
	default:
		return &KeyError{Key: c.keyFor("defaultAccessMode"), Value: c.DefaultAccessMode, Err: errors.New("want public, authenticated or upstream")}
	}
	for i, p := range c.Connect.AllowPorts {
		if p < 1 || p > 65535 {
			return &KeyError{Key: fmt.Sprintf("%s[%d]", c.keyFor("connect.allowPorts"), i), Value: strconv.Itoa(p), Err: errors.New("not a TCP port")}
		}
	}
	if err := checkNetworks(c.keyFor("upstream.allowNetworks"), c.Upstream.AllowNetworks); err != nil {
		return err
	}
	for i, n := range c.Connect.AllowNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			if _, err2 := netip.ParseAddr(n); err2 != nil {
				return &KeyError{Key: fmt.Sprintf("%s[%d]", c.keyFor("connect.allowNetworks"), i), Value: n, Err: errors.New("want a CIDR such as 127.0.0.1/32 or an IP address")}
			}
		}
	}
	return nil
}

// checkNetworks checks a list of CIDRs or IPs given by key.
func checkNetworks(key string, list []string) error {
	for i, n := range list {
		if _, err := netip.ParsePrefix(n); err != nil {
			if _, err2 := netip.ParseAddr(n); err2 != nil {
				return &KeyError{Key: fmt.Sprintf("%s[%d]", key, i), Value: n, Err: errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")}
			}
		}
	}
	return nil
}

// validateTagList checks the bounds of a tag listing: both positive.
func (c *Config) validateTagList() error {
	if c.TagList.MaxBytes <= 0 {
		return &KeyError{Key: c.keyFor("tagList.maxBytes"), Value: c.TagList.MaxBytes.String(), Err: errors.New("must be positive")}
	}
	if c.TagList.MaxTags <= 0 {
		return &KeyError{Key: c.keyFor("tagList.maxTags"), Value: strconv.Itoa(c.TagList.MaxTags), Err: errors.New("must be positive")}
	}
	return nil
}

// sharedDrivers are the storage drivers several replicas can share.
var sharedDrivers = map[string]bool{"s3": true, "gcs": true, "azure": true}

// validateCluster checks redis, cluster and storage.redirect: replicas
// share one bucket, so Redis needs a shared driver; advertising needs
// Redis and a secret.
func (c *Config) validateCluster() error {
	driver := c.StorageDriverName()
	if c.StorageRedirect && !sharedDrivers[driver] {
		return &KeyError{Key: c.keyFor("storage.redirect"), Value: "true",
			Err: fmt.Errorf("the %s driver has no redirects; want s3, gcs or azure", driver)}
	}
	r := c.Redis
	if r.Addr == "" {
		if c.Cluster.Advertise != "" {
			return &KeyError{Key: c.keyFor("redis.addr"), Err: errors.New("required with cluster.advertise: replicas find each other through Redis")}
		}
		return nil
	}
	if host, port, err := net.SplitHostPort(r.Addr); err != nil || host == "" || port == "" {
		return &KeyError{Key: c.keyFor("redis.addr"), Value: r.Addr, Err: errors.New("want host:port")}
	}
	if !sharedDrivers[driver] {
		return &KeyError{Key: c.keyFor("redis.addr"), Value: r.Addr,
			Err: fmt.Errorf("replicas sharing Redis must share the storage too; the %s driver is one process's: want s3, gcs or azure", driver)}
	}
	if r.DB < 0 {
		return &KeyError{Key: c.keyFor("redis.db"), Value: strconv.Itoa(r.DB), Err: errors.New("want 0 or more")}
	}
	if strings.ContainsAny(r.Prefix, " \t\r\n{}") {
		return &KeyError{Key: c.keyFor("redis.prefix"), Value: r.Prefix, Err: errors.New("want no spaces or braces")}
	}
	return c.validateAdvertise()
}

func (c *Config) validateAdvertise() error {
	adv := c.Cluster.Advertise
	if adv == "" {
		return nil
	}
	u, err := url.Parse(adv)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || checkPort(u.Port()) != nil ||
		(u.Path != "" && u.Path != "/") || strings.ContainsAny(adv, "?#") || u.User != nil {
		return &KeyError{Key: c.keyFor("cluster.advertise"), Value: adv, Err: errors.New("want http://host:port (the address other replicas reach, e.g. http://$(POD_IP):3128)")}
	}
	if len(c.Cluster.Secret) < 16 {
		return &KeyError{Key: c.keyFor("cluster.secret"), Err: errors.New("required with cluster.advertise: at least 16 characters, the same on every replica")}
	}
	return nil
}
