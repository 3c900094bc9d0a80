package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// namespaceRE is a path component of a distribution reference: clients
// (podman's registries.conf mirror location) reject anything else.
var namespaceRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// canonicalHost is the key a registry host is compared by: lower case,
// without ":443", Docker Hub's aliases as DockerHubHost.
func canonicalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ":443")
	for _, a := range dockerHubAliases {
		if h == a {
			return DockerHubHost
		}
	}
	return h
}

func (c *Config) validateRegistries() error {
	hosts := map[string]string{}      // canonical host → key that named it
	namespaces := map[string]string{} // namespace → key that named it
	for i := range c.Registries {
		r := &c.Registries[i]
		key := func(field string) string {
			if r.from != "" {
				return r.from
			}
			return fmt.Sprintf("registries[%d].%s", i, field)
		}
		if err := checkHost(r.Host); err != nil {
			return &KeyError{Key: key("host"), Value: r.Host, Err: err}
		}
		canon := canonicalHost(r.Host)
		if prev, dup := hosts[canon]; dup {
			return &KeyError{Key: key("host"), Value: r.Host, Err: fmt.Errorf("duplicate registry (already given by %s)", prev)}
		}
		hosts[canon] = key("host")
		if canon == DockerHubHost && !c.DockerHub {
			return &KeyError{Key: key("host"), Value: r.Host, Err: fmt.Errorf("listed, but Docker Hub is turned off by %s", c.keyFor("dockerHub"))}
		}
		r.Host = canon

		nsKey := key("namespace")
		if r.Namespace == "" {
			r.Namespace = strings.ReplaceAll(canon, ":", "_")
			if !namespaceRE.MatchString(r.Namespace) {
				return &KeyError{Key: key("host"), Value: canon, Err: fmt.Errorf("default namespace %q is not a valid path component; set namespace", r.Namespace)}
			}
		}
		if err := checkNamespace(r.Namespace); err != nil {
			return &KeyError{Key: nsKey, Value: r.Namespace, Err: err}
		}
		if prev, dup := namespaces[r.Namespace]; dup {
			return &KeyError{Key: nsKey, Value: r.Namespace, Err: fmt.Errorf("duplicate namespace (already used by %s)", prev)}
		}
		namespaces[r.Namespace] = nsKey

		if r.Endpoint != "" {
			ep, err := checkEndpoint(r.Endpoint)
			if err != nil {
				return &KeyError{Key: key("endpoint"), Value: r.Endpoint, Err: err}
			}
			r.Endpoint = ep
		}
		if r.CAFile != "" {
			if err := checkCAFile(r.CAFile); err != nil {
				return &KeyError{Key: key("caFile"), Value: r.CAFile, Err: err}
			}
		}
		if err := c.validateRegistryAuth(r, key); err != nil {
			return err
		}
		if err := validateRegistryLists(i, r); err != nil {
			return err
		}
	}
	return nil
}

// validateRegistryLists checks registries[i]'s tokenRealms and
// allowNetworks.
func validateRegistryLists(i int, r *Registry) error {
	for j, h := range r.TokenRealms {
		if err := checkHost(h); err != nil {
			return &KeyError{Key: fmt.Sprintf("registries[%d].tokenRealms[%d]", i, j), Value: h, Err: err}
		}
	}
	return checkNetworks(fmt.Sprintf("registries[%d].allowNetworks", i), r.AllowNetworks)
}

// checkHost accepts a DNS name or IP address (IPv6 in brackets) with an
// optional port, and nothing else: no scheme, no path.
func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("empty host")
	case strings.Contains(h, "://"):
		return errors.New("want host[:port] without a scheme")
	case strings.ContainsAny(h, "/?#"):
		return errors.New("want host[:port] without a path")
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return errors.New("missing ] after IPv6 address")
		}
		host = h[1:end]
		if rest := h[end+1:]; rest != "" {
			if rest[0] != ':' {
				return fmt.Errorf("unexpected %q after IPv6 address", rest)
			}
			port = rest[1:]
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return fmt.Errorf("%q is not an IPv6 address", host)
		}
	} else {
		if strings.Count(h, ":") > 1 {
			return errors.New("an IPv6 address must be in brackets, e.g. [fd00::1]:5000")
		}
		if i := strings.IndexByte(h, ':'); i >= 0 {
			host, port = h[:i], h[i+1:]
			if port == "" {
				return errors.New("empty port")
			}
		}
		if net.ParseIP(host) == nil && !isDNSName(host) {
			return fmt.Errorf("%q is not a DNS name or IP address", host)
		}
	}
	if port != "" {
		return checkPort(port)
	}
	return nil
}

// checkPort accepts a port number from 1 to 65535 written without a sign
// or leading zeros: "0443" or "+443" would name a host under a second
// key, namespace and cache.
func checkPort(port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if strconv.Itoa(n) != port {
		return fmt.Errorf("port %q: write it as %d", port, n)
	}
	return nil
}

// isDNSName reports whether s is a syntactically valid host name.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isLabelByte(label[i]) {
				return false
			}
		}
	}
	return true
}

// isLabelByte reports whether c may appear in a DNS label: a letter, a
// digit or '-'.
func isLabelByte(c byte) bool {
	return isLetter(c) || c >= '0' && c <= '9' || c == '-'
}

func checkNamespace(ns string) error {
	if strings.ContainsAny(ns, ":/") {
		return errors.New("must not contain ':' or '/'")
	}
	if !namespaceRE.MatchString(ns) {
		return errors.New("want a path component: lower-case letters, digits, and . _ - between them")
	}
	return nil
}

// checkEndpoint accepts an http or https URL with no path beyond "/" and
// returns it without the trailing "/".
func checkEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("want an http:// or https:// URL")
	case u.Opaque != "" || u.Host == "":
		return "", errors.New("missing host (want scheme://host[:port])")
	case u.User != nil:
		return "", errors.New("credentials belong in username and password, not in the URL")
	case u.Path != "" && u.Path != "/":
		return "", errors.New("a path is not allowed (want scheme://host[:port])")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", errors.New("a query or fragment is not allowed")
	}
	if err := checkHost(u.Host); err != nil {
		return "", err
	}
	u.Path = ""
	return u.String(), nil
}

// checkCAFile requires a readable file of one or more PEM certificates.
func checkCAFile(path string) error {
	data, err := readSetting(path)
	if err != nil {
		return err
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n, err)
		}
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	return nil
}
