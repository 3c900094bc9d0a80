package config

import (
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// flagValues holds what the command line said; a flag overrides only when
// it was set (FlagSet.Changed).
type flagValues struct {
	config, listen, cacheDir, caDir, logFormat string
	dockerConfig, htpasswd                     string
	metricsListen, redisAddr, advertise        string
	debug, noDockerHub, allowPush              bool
	registries                                 []string
}

// newFlagSet defines the flags on a new FlagSet (no global state), with
// ContinueOnError and its output discarded: errors come back from Parse,
// and --help makes Parse return pflag.ErrHelp.
func newFlagSet(v *flagValues) *pflag.FlagSet {
	fs := pflag.NewFlagSet("container-registry-proxy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.StringVar(&v.config, "config", "", "YAML configuration `file` (env CONFIG_FILE); see config.yml.example")
	fs.StringVar(&v.listen, "listen", ":3128", "listen `address` for the proxy, mirror, /ca.crt and /metrics (env LISTEN)")
	fs.StringVar(&v.metricsListen, "metrics-listen", "", "extra listen `address` serving only /metrics, /healthz and /readyz (env METRICS_LISTEN; default off)")
	fs.StringVar(&v.cacheDir, "cache-dir", "", "cache `directory` (env CACHE_DIRECTORY; default <user cache dir>/container-registry-proxy)")
	fs.StringVar(&v.caDir, "ca-dir", "", "`directory` of ca.crt and ca.key (env CA_DIRECTORY; default <user config dir>/container-registry-proxy/ca)")
	fs.StringVar(&v.logFormat, "log-format", "text", "log `format`: text or json (env LOG_FORMAT)")
	boolFlag(fs, &v.debug, "debug", "verbose logs (env DEBUG)")
	boolFlag(fs, &v.noDockerHub, "no-docker-hub", "do not serve Docker Hub (env DOCKER_HUB=false)")
	boolFlag(fs, &v.allowPush, "allow-push", "pass pushes to intercepted registries through to upstream (env ALLOW_PUSH)")
	fs.StringVar(&v.dockerConfig, "docker-config", "", "Docker config.json `file` whose auths, credHelpers and credsStore supply upstream credentials (env DOCKER_CONFIG_FILE)")
	fs.StringVar(&v.htpasswd, "htpasswd", "", "htpasswd `file` (bcrypt) of the proxy's users (env HTPASSWD)")
	fs.StringVar(&v.redisAddr, "redis-addr", "", "Redis `host:port` shared by the replicas of one cache (env REDIS_ADDR; default none: the embedded index)")
	fs.StringVar(&v.advertise, "advertise", "", "`URL` at which the other replicas reach this one, e.g. http://$POD_IP:3128 (env CLUSTER_ADVERTISE; needs CLUSTER_SECRET)")
	fs.StringArrayVar(&v.registries, "registries", nil, "registry `hosts` to intercept and cache, space or comma separated, repeatable; replaces env REGISTRIES (default \""+DefaultRegistries+"\")")
	return fs
}

// Usage returns the flags' help text, for main to print after
// pflag.ErrHelp or a usage error.
func Usage() string {
	var v flagValues
	return newFlagSet(&v).FlagUsages()
}

// boolValue is a pflag.Value accepting the same booleans as the
// environment (true/false, 1/0, yes/no, on/off).
type boolValue struct{ p *bool }

func (b boolValue) String() string {
	if b.p != nil && *b.p {
		return "true"
	}
	return "false"
}

func (b boolValue) Set(s string) error {
	v, err := parseBool(s)
	if err != nil {
		return err
	}
	*b.p = v
	return nil
}

func (b boolValue) Type() string { return "bool" }

func boolFlag(fs *pflag.FlagSet, p *bool, name, usage string) {
	fs.VarPF(boolValue{p}, name, "", usage).NoOptDefVal = "true"
}

// splitHosts splits a REGISTRIES-style list on spaces and commas.
func splitHosts(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n'
	})
}
