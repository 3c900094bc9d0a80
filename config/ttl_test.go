package config

import (
	"testing"
	"time"
)

func TestTTLDefaultTiers(t *testing.T) {
	t.Parallel()
	c := Default()
	c.ManifestCache.Enabled = true
	c.CacheDir, c.CADir = t.TempDir(), t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	m := c.ManifestCache
	for _, tc := range []struct {
		tag         string
		primary     bool
		secondary   bool
		want        time.Duration
		explanation string
	}{
		{"stable-alpine", true, false, 10 * time.Minute, "starts with stable"},
		{"stable", true, false, 10 * time.Minute, ""},
		{"testing", true, false, 10 * time.Minute, "anchored at the start only, not at the end"},
		{"production-v2", true, false, 10 * time.Minute, ""},
		{"1.2.3", false, true, 60 * day, "three digits or dots"},
		{"v1.25.4-rc1", false, true, 60 * day, ""},
		{"20240101", false, true, 60 * day, ""},
		{"v1.2", false, true, 60 * day, "1, '.', 2: three digit-or-dot characters"},
		{"latest", false, false, time.Hour, ""},
		// Not primary: the regex must match at the tag's start. Not
		// secondary either: the secondary regex needs at least three
		// characters that are digits or dots, "mystable" has none.
		{"mystable", false, false, time.Hour, "not anchored at the end, but at the start"},
		{"alpine3", false, false, time.Hour, "one digit is not version-like"},
		{"v10", false, false, time.Hour, "two digits are not enough"},
	} {
		t.Run(tc.tag, func(t *testing.T) {
			t.Parallel()
			if got := m.Primary.MatchString(tc.tag); got != tc.primary {
				t.Errorf("primary match = %v, want %v (%s)", got, tc.primary, tc.explanation)
			}
			if got := m.Secondary.MatchString(tc.tag); !tc.primary && got != tc.secondary {
				t.Errorf("secondary match = %v, want %v (%s)", got, tc.secondary, tc.explanation)
			}
			if got := m.TTL(tc.tag); got != tc.want {
				t.Errorf("TTL(%q) = %v, want %v", tc.tag, got, tc.want)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	base := Default().ManifestCache
	for _, tc := range []struct {
		name   string
		modify func(*ManifestCache)
		tag    string
		want   time.Duration
	}{
		{"disabled is zero", func(m *ManifestCache) { m.Enabled = false }, "stable", 0},
		{"not validated compiles itself", func(m *ManifestCache) {}, "stable-x", 10 * time.Minute},
		{"empty primary disables the tier", func(m *ManifestCache) { m.PrimaryRegex = "" }, "stable", time.Hour},
		{"custom secondary", func(m *ManifestCache) { m.SecondaryRegex = `v\d`; m.SecondaryTime = Duration(time.Minute) }, "v2", time.Minute},
		{"custom secondary anchored", func(m *ManifestCache) { m.SecondaryRegex = `v\d` }, "xv2", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := base
			m.Enabled = true
			tc.modify(&m)
			if got := m.TTL(tc.tag); got != tc.want {
				t.Errorf("TTL(%q) = %v, want %v", tc.tag, got, tc.want)
			}
		})
	}
}
