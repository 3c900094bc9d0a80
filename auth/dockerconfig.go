package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// IdentityTokenUsername is the user name a credential helper (or a Docker
// config's identitytoken) uses to say that the secret is an identity
// (OAuth2 refresh) token rather than a password. The token flow then asks
// the realm with the OAuth2 refresh_token grant first.
const IdentityTokenUsername = "<token>"

// helperNameRE is what may follow "docker-credential-" in a helper name:
// no path separators, nothing a shell would interpret.
var helperNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// dockerConfig is the part of a Docker config.json the keychain uses, with
// every server key reduced to a canonical host.
type dockerConfig struct {
	auths   map[string]Credentials
	helpers map[string]string // credHelpers: host → helper name
	store   string            // credsStore: default helper
}

// rawDockerConfig is config.json as Docker writes it.
type rawDockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredHelpers map[string]string `json:"credHelpers"`
	CredsStore  string            `json:"credsStore"`
}

// parseDockerConfig reads config.json. Errors name the offending server
// key, never a credential.
func parseDockerConfig(data []byte) (dockerConfig, error) {
	var raw rawDockerConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return dockerConfig{}, fmt.Errorf("not a Docker config.json: %s", jsonErrorWithoutContent(err))
	}
	dc := dockerConfig{auths: map[string]Credentials{}, helpers: map[string]string{}}
	// Sorted keys: when two forms of one host are present ("quay.io" and
	// "https://quay.io") the choice does not depend on map order.
	keys := make([]string, 0, len(raw.Auths))
	for k := range raw.Auths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := raw.Auths[k]
		host := serverHost(k)
		if host == "" {
			return dockerConfig{}, fmt.Errorf("auths: key %q is not a registry host or URL", k)
		}
		c := Credentials{Username: a.Username, Password: a.Password}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Auth))
			if err != nil {
				return dockerConfig{}, fmt.Errorf("auths[%q].auth: not base64", k)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return dockerConfig{}, fmt.Errorf("auths[%q].auth: want base64 of user:password", k)
			}
			c = Credentials{Username: user, Password: pass}
		}
		if a.IdentityToken != "" {
			c = Credentials{Username: IdentityTokenUsername, Password: a.IdentityToken}
		}
		if c.IsZero() {
			continue // a placeholder next to credsStore
		}
		if _, dup := dc.auths[host]; !dup {
			dc.auths[host] = c
		}
	}
	for k, h := range raw.CredHelpers {
		host := serverHost(k)
		if host == "" {
			return dockerConfig{}, fmt.Errorf("credHelpers: key %q is not a registry host or URL", k)
		}
		if !helperNameRE.MatchString(h) {
			return dockerConfig{}, fmt.Errorf("credHelpers[%q]: invalid helper name %q", k, h)
		}
		dc.helpers[host] = h
	}
	if raw.CredsStore != "" {
		if !helperNameRE.MatchString(raw.CredsStore) {
			return dockerConfig{}, fmt.Errorf("credsStore: invalid helper name %q", raw.CredsStore)
		}
		dc.store = raw.CredsStore
	}
	return dc, nil
}

// serverHost reduces a Docker config server key ("https://index.docker.io/v1/",
// "quay.io", "https://quay.io", "localhost:5000") to a canonical host; ""
// when nothing host-like is left.
func serverHost(s string) string {
	s = strings.TrimSpace(s)
	if _, rest, ok := strings.Cut(s, "://"); ok {
		s = rest
	}
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	if s == "" || !oci.ValidHost(s) {
		return ""
	}
	return oci.CanonicalHost(s)
}

// helperServerURLs are the server names a credential helper may have
// stored host's credentials under, most likely first: Docker stores Docker
// Hub as https://index.docker.io/v1/, other registries by host name, some
// helpers by https URL.
func helperServerURLs(host string) []string {
	if host == oci.DockerHub {
		return []string{"https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"}
	}
	return []string{host, "https://" + host}
}

// jsonErrorWithoutContent keeps json's error category without any quoted
// input (a syntax error may quote a character of a secret).
func jsonErrorWithoutContent(err error) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("JSON syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s has the wrong type (%s)", typ.Field, typ.Value)
	}
	return "malformed JSON"
}
