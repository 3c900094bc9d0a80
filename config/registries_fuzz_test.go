package config

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// FuzzAuthRegistries: AUTH_REGISTRIES with any delimiters Load accepts
// yields one entry per non-blank entry, each with a valid host, a user and
// a password, that written back parses to the same entries; an error is
// one line naming AUTH_REGISTRIES that quotes nothing but the delimiters
// and valid hosts (a piece of a password split by a delimiter it holds is
// never quoted).
func FuzzAuthRegistries(f *testing.F) {
	for _, seed := range []struct{ s, entry, field string }{
		{"quay.io:robot:pw ghcr.io:me:tok", "", ""}, {"quay.io:robot:p:w:d", "", ""}, {"  quay.io : robot :pw\n", "", ""},
		{"quay.io|robot|pw;ghcr.io|me|tok", ";", "|"}, {"https://quay.io:robot:pw", "", ""}, {"quay.io:robot", "", ""},
		{"quay.io::pw", "", ""}, {"quay.io:robot:", "", ""}, {"[::1]:5000#u#p", "", "#"}, {"a b", "", ""},
		// Found by this target: a password holding the entry delimiter
		// splits into entries, and the host of such a piece was quoted.
		{"quay.io:robot:sec ret:pa$$:x", "", ""}, {"quay.io:robot:s3cr3t p@ssw0rd:x:y", "", ""},
	} {
		f.Add(seed.s, seed.entry, seed.field)
	}
	f.Fuzz(func(t *testing.T, s, entryDelim, fieldDelim string) {
		if entryDelim == "" {
			entryDelim = DefaultAuthRegistriesDelimiter
		}
		if fieldDelim == "" {
			fieldDelim = DefaultAuthRegistryDelimiter
		}
		if strings.Contains(entryDelim, fieldDelim) || strings.Contains(fieldDelim, entryDelim) {
			return // refused by Load before parsing
		}
		entries, err := parseAuthRegistries(s, entryDelim, fieldDelim)
		if err != nil {
			checkAuthRegistriesError(t, err, entryDelim, fieldDelim)
			return
		}
		nonBlank := 0
		for _, e := range strings.Split(s, entryDelim) {
			if strings.TrimSpace(e) != "" {
				nonBlank++
			}
		}
		if len(entries) != nonBlank {
			t.Fatalf("%d entries from %d non-blank ones", len(entries), nonBlank)
		}
		written := make([]string, 0, len(entries))
		for _, e := range entries {
			if checkAuthEntry(e) != nil || e.Username != strings.TrimSpace(e.Username) || e.Host != strings.TrimSpace(e.Host) {
				t.Fatalf("entry %+v", e.Host)
			}
			written = append(written, e.Host+fieldDelim+e.Username+fieldDelim+e.Password)
		}
		again, err := parseAuthRegistries(strings.Join(written, entryDelim), entryDelim, fieldDelim)
		if err != nil || len(again) != len(entries) {
			t.Fatalf("written back: %d entries, %v; want %d", len(again), err, len(entries))
		}
		for i := range again {
			if again[i] != entries[i] {
				t.Fatalf("entry %d written back reads as another", i+1)
			}
		}
	})
}

// checkAuthRegistriesError asserts that an AUTH_REGISTRIES error is one
// line about that key quoting only the delimiters and valid hosts.
func checkAuthRegistriesError(t *testing.T, err error, entryDelim, fieldDelim string) {
	t.Helper()
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != authRegistriesKey {
		t.Fatalf("error %v: not about %s", err, authRegistriesKey)
	}
	msg := err.Error()
	for _, q := range quoted(msg) {
		if q != entryDelim && q != fieldDelim && checkHost(q) != nil {
			t.Fatalf("error %q quotes %q, which is no host", msg, q)
		}
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error %q is not one line", msg)
	}
}

// quoted returns the Go-quoted strings in msg.
func quoted(msg string) []string {
	var out []string
	for i := strings.IndexByte(msg, '"'); i >= 0; i = strings.IndexByte(msg, '"') {
		q, err := strconv.QuotedPrefix(msg[i:])
		if err != nil {
			msg = msg[i+1:]
			continue
		}
		s, _ := strconv.Unquote(q)
		out = append(out, s)
		msg = msg[i+len(q):]
	}
	return out
}

// FuzzRegistries: whatever REGISTRIES holds, Load either refuses it with
// one line naming REGISTRIES or serves registries whose hosts are valid
// for the mirror's routes (oci.ValidHost), canonical (one spelling per
// host and port: lower case, no :443, no leading zeros in the port) and
// unique, with unique namespaces that are valid path components.
func FuzzRegistries(f *testing.F) {
	for _, s := range []string{
		"docker.io quay.io ghcr.io", "quay.io,QUAY.IO:443", "registry.local:5000\tlocalhost:5000", "[fd00::1]:5000",
		"index.docker.io registry-1.docker.io", "https://quay.io", "quay.io/x", "a_b.test", "-a.test", "1.2.3.4:0",
		"a.test:65536", "[::ffff:1.2.3.4]", "x..y", strings.Repeat("a", 64) + ".test", "a.b:5000 a.b:5000",
		// Found by this target: a port with leading zeros named the
		// same registry under another key, namespace and cache.
		"quay.io:0443", "quay.io quay.io:0443", "a.test:05000",
	} {
		f.Add(s)
	}
	cacheDir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Load(nil, envMap(map[string]string{"REGISTRIES": s, "CACHE_DIRECTORY": cacheDir, "CA_DIRECTORY": cacheDir}))
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "REGISTRIES" || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("REGISTRIES=%q: %v", s, err)
			}
			return
		}
		hosts, namespaces := map[string]bool{}, map[string]bool{}
		for _, r := range c.Registries {
			if !oci.ValidHost(r.Host) || oci.CanonicalHost(r.Host) != r.Host || !canonicalPort(r.Host) || hosts[r.Host] {
				t.Fatalf("REGISTRIES=%q: host %q", s, r.Host)
			}
			if !namespaceRE.MatchString(r.Namespace) || !oci.ValidRepository(r.Namespace) || namespaces[r.Namespace] {
				t.Fatalf("REGISTRIES=%q: namespace %q", s, r.Namespace)
			}
			hosts[r.Host], namespaces[r.Namespace] = true, true
		}
	})
}

// canonicalPort reports whether host's port, if any, is written as
// strconv.Itoa writes it.
func canonicalPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.HasSuffix(host, "]") {
		return true
	}
	n, err := strconv.Atoi(host[i+1:])
	return err == nil && strconv.Itoa(n) == host[i+1:]
}

// FuzzAdvertise: cluster.advertise is accepted only as http(s)://host:port
// with a port from 1 to 65535, and the peer URLs the other replicas build
// from it keep their path out of any query.
func FuzzAdvertise(f *testing.F) {
	for _, s := range []string{
		"http://10.0.0.7:3128", "https://proxy-0.proxy:3128/", "http://[fd00::7]:3128", "http://a:3128/x", "http://a", "ftp://a:1",
		// Found by FuzzValidAdvertise (cluster), the same rule: an empty
		// query, a fragment, and ports outside 1 to 65535.
		"http://a:1?", "http://a:1#", "http://a:1#f", "http://a:0", "http://a:99999", "http://a:080",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := &Config{Cluster: Cluster{Advertise: s, Secret: strings.Repeat("s", 16)}}
		err := c.validateAdvertise()
		if s == "" { // not advertised: a replica that only follows
			if err != nil {
				t.Fatalf("no cluster.advertise: %v", err)
			}
			return
		}
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "cluster.advertise" {
				t.Fatalf("cluster.advertise %q: %v", s, err)
			}
			return
		}
		u, err := url.Parse(s)
		if err != nil || checkPort(u.Port()) != nil || u.User != nil {
			t.Fatalf("cluster.advertise %q accepted", s)
		}
		peer, err := url.Parse(strings.TrimSuffix(s, "/") + "/_cluster/blobs/x?repo=y")
		if err != nil || peer.Host != u.Host || peer.Path != "/_cluster/blobs/x" || peer.Query().Get("repo") != "y" {
			t.Fatalf("cluster.advertise %q: peer URL %v (%v)", s, peer, err)
		}
	})
}
