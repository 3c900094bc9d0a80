package mirror

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Stale answers carry a Warning header in the form the distribution spec
// and RFC 7234 §5.5 give: warn-code 299 (miscellaneous persistent
// warning), warn-agent "-", and a quoted warn-text saying why the answer
// is stale and since when upstream last confirmed it. containerd and
// regclient show the text to users.
const (
	// reasonUnavailable: upstream failed (or is held after a failure).
	reasonUnavailable = "upstream unavailable"
	// reasonRateLimit: revalidation postponed by upstream's rate limit.
	reasonRateLimit = "revalidation postponed, upstream rate limit nearly used up"
	// reasonSlow: the revalidation outlasted Options.RevalidateWait and
	// goes on in the background.
	reasonSlow = "upstream slow to answer, revalidating in the background"
)

// staleReason is the reason of an answer made stale by cause, an
// upstream failure.
func staleReason(cause error) string {
	if status, _, ok := throttleOf(cause); ok {
		return reasonThrottled(status)
	}
	return reasonUnavailable
}

// reasonThrottled: upstream asked to wait (status 429 or 503).
func reasonThrottled(status int) string {
	return "upstream asked to wait (" + strconv.Itoa(status) + " " + http.StatusText(status) + ")"
}

// staleWarningFor returns the Warning header value of an answer that is
// stale for reason, from a record upstream last confirmed at cached (zero
// when unknown, then the time is left out):
//
//	299 - "Response is stale: upstream unavailable; cached 2026-01-01T00:00:00Z"
func staleWarningFor(reason string, cached time.Time) string {
	text := "Response is stale: " + reason
	if !cached.IsZero() {
		text += "; cached " + cached.UTC().Format(time.RFC3339)
	}
	return `299 - ` + quotedString(text)
}

// quotedString returns s as an RFC 9110 quoted-string: '"' and '\' are
// escaped as quoted-pairs, and control characters (which no header may
// carry) and non-ASCII bytes (obs-text, which clients may mangle) become
// spaces.
func quotedString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := range len(s) {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t' || (c >= 0x20 && c < 0x7f):
			b.WriteByte(c)
		default:
			b.WriteByte(' ')
		}
	}
	b.WriteByte('"')
	return b.String()
}
