package config_test

import (
	"regexp"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
)

// BenchmarkManifestCacheTTL measures tag tier matching (ManifestCache.TTL),
// done for every manifest GET by tag when the manifest cache is on, with
// the default tiers: a primary tag, a versioned tag (secondary tier), a
// tag that matches neither, and a long one. "compiled" is what the proxy
// runs (regexes compiled by Validate); "uncompiled" is a ManifestCache
// that was not validated, which compiles its regexes on every call.
func BenchmarkManifestCacheTTL(b *testing.B) {
	tags := []struct{ name, tag string }{
		{"primary", "stable"},
		{"secondary", "v1.27.3"},
		{"default", "latest"},
		{"long", "sha-4f2b9c1e0d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c-linux-amd64"},
	}
	compiled := config.Default().ManifestCache
	compiled.Enabled = true
	compiled.Primary = regexp.MustCompile(`^(?:` + compiled.PrimaryRegex + `)`)
	compiled.Secondary = regexp.MustCompile(`^(?:` + compiled.SecondaryRegex + `)`)
	uncompiled := config.Default().ManifestCache
	uncompiled.Enabled = true
	for _, mc := range []struct {
		name string
		m    config.ManifestCache
	}{{"compiled", compiled}, {"uncompiled", uncompiled}} {
		for _, t := range tags {
			b.Run(mc.name+"/"+t.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = mc.m.TTL(t.tag)
				}
			})
		}
	}
}

// BenchmarkManifestCacheTTLValidated checks that a Config that went
// through Validate (as the proxy's does) uses compiled tiers: it should
// match "compiled" above, not "uncompiled".
func BenchmarkManifestCacheTTLValidated(b *testing.B) {
	c := config.Default()
	c.CacheDir = b.TempDir()
	c.CADir = b.TempDir()
	c.ManifestCache.Enabled = true
	if err := c.Validate(); err != nil {
		b.Skipf("default config does not validate here: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.ManifestCache.TTL("v1.27.3")
	}
}
