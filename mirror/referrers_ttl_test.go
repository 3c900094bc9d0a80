package mirror

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestReferrersTTLCappedByTheDefaultTier: the fallback tag sha256-<hex>
// looks like a version, but referrers change whenever something is
// attached: they are trusted no longer than the default tier.
func TestReferrersTTLCappedByTheDefaultTier(t *testing.T) {
	t.Parallel()
	tiers := func(tag string) time.Duration {
		if strings.ContainsAny(tag, "0123456789") {
			return 60 * 24 * time.Hour // the version tier
		}
		return time.Hour // the default tier
	}
	d := digest.FromString("subject")
	for _, tc := range []struct {
		ttl  func(string) time.Duration
		want time.Duration
	}{
		{tiers, time.Hour},
		{func(string) time.Duration { return 10 * time.Minute }, 10 * time.Minute},
		{func(string) time.Duration { return 0 }, 0},
	} {
		m := &Mirror{opts: Options{TagTTL: tc.ttl}}
		if got := m.referrersTTL(d); got != tc.want {
			t.Errorf("referrersTTL = %s, want %s", got, tc.want)
		}
	}
}
