package config

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseDuration: an nginx duration (MANIFEST_CACHE_*_TIME,
// PROXY_*_TIMEOUT, …) parses to a non-negative duration that formats back
// to the same value, a bare number is seconds, and every duration the
// proxy writes (whole milliseconds) parses back to itself.
func FuzzParseDuration(f *testing.F) {
	for _, seed := range []struct {
		s string
		n int64
	}{
		{"300", 0}, {"10m", 1}, {"1h30m", int64(90 * time.Minute)}, {"1d 12h", int64(time.Millisecond)}, {"1y1M1w1d1h1m1s1ms", 0},
		{"30m1h", 0}, {"1h1h", 0}, {"-5s", -1}, {"1.5h", 0}, {"1 h", 0}, {"1h 30", 0}, {"5x", 0}, {"ms", 0}, {"", 0},
		{"9223372036854775807ms", math.MaxInt64}, {"292y", 0}, {"293y", 0}, {"99999999999999999999", 0}, {" 60d\t", 0},
	} {
		f.Add(seed.s, seed.n)
	}
	f.Fuzz(func(t *testing.T, s string, n int64) {
		d, err := ParseDuration(s)
		if err != nil {
			var ve *ValueError
			if !errors.As(err, &ve) || ve.Kind != "duration" || ve.Value != s {
				t.Fatalf("ParseDuration(%q): %v", s, err)
			}
		} else {
			if d < 0 {
				t.Fatalf("ParseDuration(%q) = %v", s, d)
			}
			if again, err := ParseDuration(Duration(d).String()); err != nil || again != d {
				t.Fatalf("ParseDuration(%q) = %v, written %q, read back %v, %v", s, d, Duration(d).String(), again, err)
			}
			if in := strings.TrimSpace(s); isDigits(in) {
				if v, err := strconv.ParseInt(in, 10, 64); err == nil && v <= math.MaxInt64/int64(time.Second) && d != time.Duration(v)*time.Second {
					t.Fatalf("ParseDuration(%q) = %v, want %d seconds", s, d, v)
				}
			}
		}
		w := time.Duration(n)
		if w < 0 {
			w = -(w + 1)
		}
		w -= w % time.Millisecond
		if again, err := ParseDuration(Duration(w).String()); err != nil || again != w {
			t.Fatalf("%v written %q reads back as %v, %v", w, Duration(w).String(), again, err)
		}
	})
}

// FuzzParseSize: an nginx size (CACHE_MAX_SIZE, CACHE_MIN_FREE) parses to
// a non-negative byte count that formats back to itself, and every size
// the proxy writes parses back to itself.
func FuzzParseSize(f *testing.F) {
	for _, seed := range []struct {
		s string
		n int64
	}{
		{"32g", 32 << 30}, {"512K", 0}, {"1048576", 1 << 20}, {"1536m", 0}, {"8388607t", 0}, {"8388608t", 0}, {"-1", -1},
		{"1.5g", 0}, {"1 g", 0}, {"g", 0}, {"", 0}, {"1gb", 0}, {"9223372036854775807", math.MaxInt64}, {" 7k ", 0},
	} {
		f.Add(seed.s, seed.n)
	}
	f.Fuzz(func(t *testing.T, s string, n int64) {
		v, err := ParseSize(s)
		if err != nil {
			var ve *ValueError
			if !errors.As(err, &ve) || ve.Kind != "size" || ve.Value != s {
				t.Fatalf("ParseSize(%q): %v", s, err)
			}
		} else {
			if v < 0 {
				t.Fatalf("ParseSize(%q) = %d", s, v)
			}
			if again, err := ParseSize(Size(v).String()); err != nil || again != v {
				t.Fatalf("ParseSize(%q) = %d, written %q, read back %d, %v", s, v, Size(v).String(), again, err)
			}
		}
		if n < 0 {
			n = -(n + 1)
		}
		if again, err := ParseSize(Size(n).String()); err != nil || again != n {
			t.Fatalf("%d written %q reads back as %d, %v", n, Size(n).String(), again, err)
		}
	})
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// FuzzManifestTTL: a tag gets the primary tier's time exactly when the
// primary regex matches at the tag's start, else the secondary's when
// that one does, else the default; a regex that does not compile is a
// one-line error naming its key.
func FuzzManifestTTL(f *testing.F) {
	for _, seed := range []struct{ primary, secondary, tag string }{
		{"(stable|main|develop)", "", "stable-1"}, {"^v?[0-9]+", "latest", "latest"}, {"a|b", "", "xa"}, {"x$", "", "x"},
		{"", "", "v1"}, {"(", "", "v1"}, {"(?i)LATEST", "", "latest"},
		// Found by this target: a regex with \Q (literal text to its end)
		// compiles, but anchored as ^(?:…) it swallowed the closing
		// parenthesis and Validate failed without naming the key.
		{`\Qabc`, "", "abc"}, {`\Qa)|(b`, "", "b"}, {"", `x\Q`, "x"},
		{"a)|(b", "", "b"}, {"(?m)^b", "", "a\nb"}, {`\z`, "", ""}, {"[", "", ""}, {"x{1001}", "", "x"},
	} {
		f.Add(seed.primary, seed.secondary, seed.tag)
	}
	f.Fuzz(func(t *testing.T, primary, secondary, tag string) {
		c := &Config{ManifestCache: ManifestCache{
			Enabled: true, PrimaryRegex: primary, SecondaryRegex: secondary,
			PrimaryTime: Duration(time.Hour), SecondaryTime: Duration(time.Minute), DefaultTime: Duration(time.Second),
		}}
		err := c.validateManifestCache()
		pOK, sOK := compiles(primary), compiles(secondary)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) || (ke.Key != "manifestCache.primaryRegex" && ke.Key != "manifestCache.secondaryRegex") ||
				strings.ContainsAny(err.Error(), "\r\n") && !strings.ContainsAny(primary+secondary, "\r\n") {
				t.Fatalf("regexes %q, %q: %v", primary, secondary, err)
			}
			if pOK && sOK {
				t.Fatalf("regexes %q, %q compile, yet: %v", primary, secondary, err)
			}
			return
		}
		if !pOK || !sOK {
			t.Fatalf("regexes %q, %q: one does not compile, yet accepted", primary, secondary)
		}
		want := time.Second
		switch {
		case primary != "" && matchesAtStart(primary, tag):
			want = time.Hour
		case secondary != "" && matchesAtStart(secondary, tag):
			want = time.Minute
		}
		if got := c.ManifestCache.TTL(tag); got != want {
			t.Fatalf("regexes %q, %q: tag %q gets %v, want %v", primary, secondary, tag, got, want)
		}
	})
}

func compiles(src string) bool {
	_, err := regexp.Compile(src)
	return err == nil
}

// matchesAtStart reports whether src matches tag at its start: the
// leftmost match starts at 0 exactly when some match does.
func matchesAtStart(src, tag string) bool {
	loc := regexp.MustCompile(src).FindStringIndex(tag)
	return loc != nil && loc[0] == 0
}
