package config

import (
	"regexp"
	"time"
)

// TTL returns how long a cached manifest for tag is served without asking
// upstream: PrimaryTime when the tag matches the primary regex (at its
// start), else SecondaryTime when it matches the secondary one, else
// DefaultTime; 0 when the manifest cache is disabled (always revalidate).
// It uses the regexes compiled by Validate, and compiles them itself on a
// Config that was not validated.
func (m ManifestCache) TTL(tag string) time.Duration {
	if !m.Enabled {
		return 0
	}
	if tierMatches(m.Primary, m.PrimaryRegex, tag) {
		return time.Duration(m.PrimaryTime)
	}
	if tierMatches(m.Secondary, m.SecondaryRegex, tag) {
		return time.Duration(m.SecondaryTime)
	}
	return time.Duration(m.DefaultTime)
}

func tierMatches(re *regexp.Regexp, src, tag string) bool {
	if re == nil {
		if src == "" {
			return false
		}
		var err error
		if re, err = compileTier(src); err != nil {
			return false
		}
	}
	return re.MatchString(tag)
}
