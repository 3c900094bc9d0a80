package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter: whatever an upstream sends as Retry-After, the
// wait is between 0 and MaxRetryAfter; delay-seconds are read exactly (up
// to the bound), an HTTP-date relative to now, and anything else is
// refused rather than guessed at.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, seed := range []string{
		"120", "0", "7", "600", "601", "999999999999999999999", "-1", "+3", "1e3", "0x10", " 42 ", "4 2",
		"Thu, 01 Jan 2026 00:01:30 GMT", "Thursday, 01-Jan-26 00:00:10 GMT", "Thu Jan  1 00:00:05 2026",
		"Wed, 31 Dec 2025 23:00:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT", "Mon, 32 Jan 2026 00:00:00 GMT",
		"", "soon", "\r\n120", "120\x00", strings.Repeat("9", 64), strings.Repeat("9", 65),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v: outside [0, %v]", v, d, MaxRetryAfter)
		}
		if !ok {
			if d != 0 {
				t.Fatalf("ParseRetryAfter(%q) refused the value but returned %v", v, d)
			}
			return
		}
		s := strings.TrimSpace(v)
		if len(s) > maxRetryAfterLen {
			t.Fatalf("ParseRetryAfter accepted %d bytes", len(s))
		}
		if allDigits(s) {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil && n <= uint64(MaxRetryAfter/time.Second) && d != time.Duration(n)*time.Second {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %ds", v, d, n)
			}
			return
		}
		at, err := http.ParseTime(s)
		if err != nil {
			t.Fatalf("ParseRetryAfter(%q) accepted a value that is neither delay-seconds nor an HTTP-date", v)
		}
		if want := min(max(at.Sub(now), 0), MaxRetryAfter); d != want {
			t.Fatalf("ParseRetryAfter(%q) = %v, want %v", v, d, want)
		}
		// What it returns reads back the same as delay-seconds.
		back, ok := ParseRetryAfter(RetryAfterSeconds(d), now)
		if !ok || back < d || back-d >= time.Second {
			t.Fatalf("RetryAfterSeconds(%v) = %q reads back as %v, %v", d, RetryAfterSeconds(d), back, ok)
		}
	})
}
