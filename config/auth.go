package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Access modes of Registry.Access.Mode ("" picks the default: see Access).
const (
	AccessPublic        = "public"
	AccessAuthenticated = "authenticated"
	AccessUsers         = "users"
	AccessUpstream      = "upstream"
)

// Defaults of the original project's AUTH_REGISTRIES delimiters.
const (
	DefaultAuthRegistriesDelimiter = " "
	DefaultAuthRegistryDelimiter   = ":"
)

// authRegistriesKey names AUTH_REGISTRIES in errors.
const authRegistriesKey = "AUTH_REGISTRIES"

// parseAuthRegistries reads AUTH_REGISTRIES as the original project did:
// entries separated by entryDelim, each "host<d>user<d>password" with
// fieldDelim as <d>; the password is everything after the second field
// delimiter, byte for byte (it may contain fieldDelim, spaces, newlines).
// Entries that are empty or only white space are skipped; the host and
// user are trimmed of surrounding white space. Errors name the entry's
// position (from 1) and, when the entry has the full shape and a valid
// host, that host — never the password or any part of an entry that might
// be one.
func parseAuthRegistries(s, entryDelim, fieldDelim string) ([]AuthEntry, error) {
	var out []AuthEntry
	for i, entry := range strings.Split(s, entryDelim) {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		n := i + 1
		host, rest, ok1 := strings.Cut(entry, fieldDelim)
		user, pass, ok2 := strings.Cut(rest, fieldDelim)
		if !ok1 || !ok2 {
			// Nothing here is known to be a host: a password holding the
			// entry delimiter splits into pieces that land here.
			return nil, &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf(
				"entry %d: want host, user and password separated by %q (a password containing %q needs another AUTH_REGISTRIES_DELIMITER)",
				n, fieldDelim, entryDelim))}
		}
		e := AuthEntry{Host: strings.TrimSpace(host), Username: strings.TrimSpace(user), Password: pass}
		if strings.HasPrefix(e.Username, "//") {
			// "https://quay.io:robot:pw" split on ":".
			return nil, &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf("entry %d: want a host without a scheme (quay.io, not https://quay.io)", n))}
		}
		if checkHost(e.Host) != nil {
			// Not quoted: what stands where the host belongs may be a
			// piece of a password that holds the entry delimiter.
			return nil, &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf(
				"entry %d: no registry host[:port] before the first %q (a password containing %q needs another AUTH_REGISTRIES_DELIMITER)",
				n, fieldDelim, entryDelim))}
		}
		if err := checkAuthEntry(e); err != nil {
			return nil, &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf("entry %d (host %q): %w", n, e.Host, err))}
		}
		out = append(out, e)
	}
	return out, nil
}

// checkAuthEntry validates one AUTH_REGISTRIES entry's fields.
func checkAuthEntry(e AuthEntry) error {
	if err := checkHost(e.Host); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	switch {
	case e.Username == "":
		return errors.New("empty user")
	case e.Password == "":
		return errors.New("empty password")
	}
	return nil
}

// validateAuth checks the credential and client authentication settings.
func (c *Config) validateAuth() error {
	seen := map[string]int{}
	for i, e := range c.AuthRegistries {
		if err := checkAuthEntry(e); err != nil {
			return &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf("entry %d (host %q): %w", i+1, e.Host, err))}
		}
		canon := canonicalHost(e.Host)
		if prev, dup := seen[canon]; dup {
			return &KeyError{Key: authRegistriesKey, Err: noValue(fmt.Errorf("entry %d (host %q): duplicate host (already given by entry %d)", i+1, e.Host, prev))}
		}
		seen[canon] = i + 1
	}
	if c.DockerConfig != "" {
		if err := checkJSONFile(c.DockerConfig); err != nil {
			return &KeyError{Key: c.keyFor("dockerConfig"), Value: c.DockerConfig, Err: err}
		}
	}
	ca := &c.ClientAuth
	if ca.Htpasswd != "" {
		if err := checkReadable(ca.Htpasswd); err != nil {
			return &KeyError{Key: c.keyFor("clientAuth.htpasswd"), Value: ca.Htpasswd, Err: err}
		}
	}
	if ca.RequireForConnect && ca.Htpasswd == "" {
		return &KeyError{Key: c.keyFor("clientAuth.requireForConnect"), Value: "true", Err: fmt.Errorf("needs %s (the proxy users)", c.keyFor("clientAuth.htpasswd"))}
	}
	if ca.UpstreamCheckTTL <= 0 {
		return &KeyError{Key: c.keyFor("clientAuth.upstreamCheckTTL"), Value: ca.UpstreamCheckTTL.String(), Err: errors.New("must be positive")}
	}
	if ca.MaxFailedLogins < 0 {
		return &KeyError{Key: c.keyFor("clientAuth.maxFailedLogins"), Value: strconv.Itoa(ca.MaxFailedLogins), Err: errors.New("must be 0 (off) or more")}
	}
	return c.validateAdmin()
}

// MinAdminToken is the shortest admin token accepted.
const MinAdminToken = 16

// validateAdmin checks the admin token settings: one of them, a token
// file that is readable.
func (c *Config) validateAdmin() error {
	a := &c.Admin
	switch {
	case a.Token != "" && a.TokenFile != "":
		return &KeyError{Key: c.keyFor("admin.tokenFile"), Value: a.TokenFile, Err: fmt.Errorf("%s is set too; give one of them", c.keyFor("admin.token"))}
	case a.Token != "" && len(a.Token) < MinAdminToken:
		return &KeyError{Key: c.keyFor("admin.token"), Err: noValue(fmt.Errorf("too short: at least %d characters (e.g. openssl rand -hex 32)", MinAdminToken))}
	case a.TokenFile != "":
		if err := checkReadable(a.TokenFile); err != nil {
			return &KeyError{Key: c.keyFor("admin.tokenFile"), Value: a.TokenFile, Err: err}
		}
	}
	return nil
}

// validateRegistryAuth checks registry r's credentials and access mode;
// key names one of its fields as the user wrote it.
func (c *Config) validateRegistryAuth(r *Registry, key func(string) string) error {
	switch {
	case r.PasswordFile != "" && r.Password != "":
		return &KeyError{Key: key("passwordFile"), Value: r.PasswordFile, Err: fmt.Errorf("%s is set too; give one of them", key("password"))}
	case r.PasswordFile != "" && r.Username == "":
		return &KeyError{Key: key("username"), Err: noValue(errors.New("missing; passwordFile needs a username"))}
	case r.PasswordFile != "":
		if err := checkReadable(r.PasswordFile); err != nil {
			return &KeyError{Key: key("passwordFile"), Value: r.PasswordFile, Err: err}
		}
	case r.Username != "" && r.Password == "":
		return &KeyError{Key: key("password"), Err: noValue(errors.New("missing; username and password (or passwordFile) go together"))}
	case r.Username == "" && r.Password != "":
		return &KeyError{Key: key("username"), Err: noValue(errors.New("missing; username and password go together"))}
	}
	a := r.Access
	modeKey := key("access.mode")
	switch a.Mode {
	case "", AccessPublic, AccessAuthenticated, AccessUsers, AccessUpstream:
	default:
		return &KeyError{Key: modeKey, Value: a.Mode, Err: errors.New("want public, authenticated, users or upstream")}
	}
	if a.Mode == AccessUsers && len(a.Users) == 0 {
		return &KeyError{Key: key("access.users"), Err: noValue(errors.New("missing; access mode users needs the list of proxy users"))}
	}
	if a.Mode != AccessUsers && len(a.Users) > 0 {
		return &KeyError{Key: key("access.users"), Err: noValue(fmt.Errorf("only allowed with access mode %s", AccessUsers))}
	}
	for j, u := range a.Users {
		if u == "" || strings.ContainsAny(u, ": \t\r\n") {
			return &KeyError{Key: fmt.Sprintf("%s[%d]", key("access.users"), j), Value: u, Err: errors.New("not a proxy user name")}
		}
	}
	if (a.Mode == AccessAuthenticated || a.Mode == AccessUsers) && c.ClientAuth.Htpasswd == "" {
		return &KeyError{Key: modeKey, Value: a.Mode, Err: fmt.Errorf("needs proxy users: set %s", c.keyFor("clientAuth.htpasswd"))}
	}
	return nil
}
