package auth

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Source supplies upstream credentials by host. Transport consults it for
// every request that carries no per-request credentials; *Keychain is the
// implementation.
type Source interface {
	// Lookup returns the credentials for host (host[:port]); ok is false
	// when the source has none. The error never contains a secret.
	Lookup(ctx context.Context, host string) (c Credentials, ok bool, err error)
	// Invalidate tells the source that upstream rejected what Lookup
	// returned for host, so cached answers are fetched again.
	Invalidate(host string)
}

// Entry is one configured credential: a YAML registry's
// username/password or passwordFile, or an AUTH_REGISTRIES entry.
type Entry struct {
	// Host is the registry host or its token realm's host (gitlab.com for
	// registry.gitlab.com, auth.docker.io or docker.io for Docker Hub);
	// it is canonicalized with oci.CanonicalHost.
	Host     string
	Username string
	// Password is used unless PasswordFile is set.
	Password string
	// PasswordFile is read for the password (one trailing newline
	// dropped) and read again when it changes (a mounted Kubernetes
	// secret).
	PasswordFile string
}

// KeychainOptions configures NewKeychain. The zero value is an empty
// keychain.
type KeychainOptions struct {
	// Entries are the configured credentials; for a host named more than
	// once the first entry wins. They come before DockerConfig.
	Entries []Entry
	// DockerConfig is the path of a Docker config.json: its auths,
	// credHelpers and credsStore (helpers docker-credential-<name> are
	// looked up in PATH). It is read again when it changes.
	DockerConfig string
	// HelperTTL is how long a credential helper's answer is reused for a
	// host (default DefaultHelperTTL).
	HelperTTL time.Duration
	// HelperTimeout bounds one helper run (default DefaultHelperTimeout).
	HelperTimeout time.Duration
	// Now is the clock (default time.Now); tests inject a fake one.
	Now func() time.Time
}

// Keychain holds the proxy's upstream credentials by canonical host: fixed
// entries, password files, a Docker config.json and its credential
// helpers, in that order of precedence (within config.json: credHelpers
// for the host, then auths, then credsStore). It is safe for concurrent
// use; a Lookup costs map lookups, at most one stat per file and second,
// and a helper run per host and HelperTTL.
type Keychain struct {
	static  map[string]Credentials
	files   map[string]*passwordFile
	docker  *watchedFile[dockerConfig]
	helpers *helpers
}

// passwordFile is an Entry with a PasswordFile.
type passwordFile struct {
	username string
	file     *watchedFile[string]
}

// NewKeychain validates opts and reads every password file and the Docker
// config once, so that a missing or malformed file fails at start. Errors
// name the entry's host and the file, never a secret.
func NewKeychain(opts KeychainOptions) (*Keychain, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HelperTTL <= 0 {
		opts.HelperTTL = DefaultHelperTTL
	}
	if opts.HelperTimeout <= 0 {
		opts.HelperTimeout = DefaultHelperTimeout
	}
	k := &Keychain{
		static:  map[string]Credentials{},
		files:   map[string]*passwordFile{},
		helpers: newHelpers(opts.HelperTTL, opts.HelperTimeout, opts.Now),
	}
	for i, e := range opts.Entries {
		host := oci.CanonicalHost(e.Host)
		if host == "" || !oci.ValidHost(host) {
			return nil, fmt.Errorf("credentials entry %d: invalid host %q", i, e.Host)
		}
		if k.has(host) {
			continue
		}
		if e.PasswordFile == "" {
			k.static[host] = Credentials{Username: e.Username, Password: e.Password}
			continue
		}
		pf := &passwordFile{username: e.Username, file: &watchedFile[string]{path: e.PasswordFile, now: opts.Now, parse: parsePasswordFile}}
		if _, err := pf.file.get(); err != nil {
			return nil, fmt.Errorf("credentials for %s: password file %w", host, err)
		}
		k.files[host] = pf
	}
	if opts.DockerConfig != "" {
		k.docker = &watchedFile[dockerConfig]{path: opts.DockerConfig, now: opts.Now, parse: parseDockerConfig}
		if _, err := k.docker.get(); err != nil {
			return nil, fmt.Errorf("docker config %s: %w", opts.DockerConfig, err)
		}
	}
	return k, nil
}

// parsePasswordFile drops one trailing newline ("\n" or "\r\n").
func parsePasswordFile(data []byte) (string, error) {
	if bytes.HasSuffix(data, []byte("\r\n")) {
		data = data[:len(data)-2]
	} else if bytes.HasSuffix(data, []byte("\n")) {
		data = data[:len(data)-1]
	}
	return string(data), nil
}

func (k *Keychain) has(host string) bool {
	_, s := k.static[host]
	_, f := k.files[host]
	return s || f
}

// Has reports whether an entry, a Docker config auths entry or a
// credHelpers entry names host explicitly (credsStore, the default helper
// for every host, does not count): whether the proxy injects credentials
// for it.
func (k *Keychain) Has(host string) bool {
	host = oci.CanonicalHost(host)
	if k.has(host) {
		return true
	}
	if k.docker == nil {
		return false
	}
	dc, err := k.docker.get()
	if err != nil {
		return false
	}
	_, a := dc.auths[host]
	_, h := dc.helpers[host]
	return a || h
}

// Covers reports whether the proxy injects credentials towards the
// registry host: an entry for it (Has), or for a domain it is under (an
// entry for gitlab.com serves registry.gitlab.com's token realm), or, for
// Docker Hub, for its token host auth.docker.io.
func (k *Keychain) Covers(host string) bool {
	host = oci.CanonicalHost(host)
	if k.Has(host) || (host == oci.DockerHub && k.Has("auth.docker.io")) {
		return true
	}
	for h := range k.static {
		if strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	for h := range k.files {
		if strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	return false
}

// Lookup implements Source: host (host[:port]) is canonicalized, so
// "index.docker.io" finds an entry for "docker.io". When nothing is known
// for host:port, the host without the port is tried: an AUTH_REGISTRIES
// entry (whose default ":" delimiter cannot carry a port) for "localhost"
// serves a token realm at localhost:8443.
func (k *Keychain) Lookup(ctx context.Context, host string) (Credentials, bool, error) {
	host = oci.CanonicalHost(host)
	c, ok, err := k.lookup(ctx, host)
	if ok || err != nil {
		return c, ok, err
	}
	if h, _, perr := net.SplitHostPort(host); perr == nil && h != "" {
		if strings.Contains(h, ":") {
			h = "[" + h + "]" // IPv6 literals keep their brackets
		}
		return k.lookup(ctx, h)
	}
	return Credentials{}, false, nil
}

// lookup finds the credentials for exactly the canonical host.
func (k *Keychain) lookup(ctx context.Context, host string) (Credentials, bool, error) {
	if c, ok := k.static[host]; ok {
		return c, true, nil
	}
	if pf, ok := k.files[host]; ok {
		pw, err := pf.file.get()
		if err != nil {
			return Credentials{}, false, fmt.Errorf("credentials for %s: password file %w", host, err)
		}
		return Credentials{Username: pf.username, Password: pw}, true, nil
	}
	if k.docker == nil {
		return Credentials{}, false, nil
	}
	dc, err := k.docker.get()
	if err != nil {
		return Credentials{}, false, fmt.Errorf("credentials for %s: docker config %w", host, err)
	}
	if h, ok := dc.helpers[host]; ok {
		return k.helpers.get(ctx, h, host)
	}
	if c, ok := dc.auths[host]; ok {
		return c, true, nil
	}
	if dc.store != "" {
		return k.helpers.get(ctx, dc.store, host)
	}
	return Credentials{}, false, nil
}

// Invalidate implements Source: it drops the helper answer cached for
// host and makes the next Lookup check host's password file and the
// Docker config for changes at once.
func (k *Keychain) Invalidate(host string) {
	host = oci.CanonicalHost(host)
	k.helpers.invalidate(host)
	if pf, ok := k.files[host]; ok {
		pf.file.recheck()
	}
	if k.docker != nil {
		k.docker.recheck()
	}
}
