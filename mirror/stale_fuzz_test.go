package mirror

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// WarningValueRE is RFC 7234 §5.5's warning-value, exported to the
// mirror_test package (stale_test.go):
//
//	warning-value = warn-code SP warn-agent SP warn-text [ SP warn-date ]
//	warn-code     = 3DIGIT
//	warn-agent    = ( uri-host [ ":" port ] ) / pseudonym   ; a token
//	warn-text     = quoted-string                            ; RFC 7230 §3.2.6
//	warn-date     = DQUOTE HTTP-date DQUOTE
var WarningValueRE = regexp.MustCompile(`^([0-9]{3}) ([!#$%&'*+.^_` + "`" + `|~0-9A-Za-z:\[\]-]+) "((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"(?: "[^"]*")?$`)

// unquote undoes quoted-pairs.
func unquote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FuzzStaleWarning: whatever a reason holds (quotes, backslashes, control
// characters, non-ASCII), the header is one valid warning-value, 299 -,
// whose text reads back as the reason with unsafe bytes made spaces.
func FuzzStaleWarning(f *testing.F) {
	for _, s := range []string{reasonUnavailable, reasonRateLimit, `a "quoted" \ reason`, "new\r\nline", "é\x00\x7f"} {
		f.Add(s, int64(1767225600))
	}
	f.Fuzz(func(t *testing.T, reason string, unix int64) {
		at := time.Unix(unix%(1<<35), 0)
		v := staleWarningFor(reason, at)
		m := WarningValueRE.FindStringSubmatch(v)
		if m == nil || m[1] != "299" || m[2] != "-" {
			t.Fatalf("staleWarningFor(%q) = %q: not a 299 - warning-value", reason, v)
		}
		want := "Response is stale: " + reason + "; cached " + at.UTC().Format(time.RFC3339)
		safe := []byte(want)
		for i, c := range safe {
			if c != '\t' && (c < 0x20 || c >= 0x7f) {
				safe[i] = ' '
			}
		}
		if got := unquote(m[3]); got != string(safe) {
			t.Fatalf("text %q, want %q", got, safe)
		}
	})
}

func TestStaleWarningFor(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, c := range []struct {
		reason string
		at     time.Time
		want   string
	}{
		{reasonUnavailable, at, `299 - "Response is stale: upstream unavailable; cached 2026-01-01T00:00:00Z"`},
		{reasonRateLimit, time.Time{}, `299 - "Response is stale: revalidation postponed, upstream rate limit nearly used up"`},
		{"say \"hi\" \\ bye\r\n", time.Time{}, `299 - "Response is stale: say \"hi\" \\ bye  "`},
	} {
		if got := staleWarningFor(c.reason, c.at); got != c.want {
			t.Errorf("staleWarningFor(%q, %v) = %q, want %q", c.reason, c.at, got, c.want)
		}
	}
}
