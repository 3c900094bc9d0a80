package oci

import (
	"fmt"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 10-19/20", 10, 19, 20, true},
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 10-19/19", 0, 0, 0, false},
		{"bytes 10-9/20", 0, 0, 0, false},
		{"bytes -1-9/20", 0, 0, 0, false},
		{"bytes +1-9/20", 0, 0, 0, false},
		{"bytes 1-9/+20", 0, 0, 0, false},
		{"bytes */20", 0, 0, 0, false},
		{"items 1-2/3", 0, 0, 0, false},
		{"bytes 1-2", 0, 0, 0, false},
		{"", 0, 0, 0, false},
		{"bytes 1-99999999999999999999/100000000000000000000", 0, 0, 0, false},
	} {
		start, end, total, ok := ParseContentRange(tc.in)
		if ok != tc.ok || start != tc.start || end != tc.end || total != tc.total {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v", tc.in, start, end, total, ok, tc.start, tc.end, tc.total, tc.ok)
		}
	}
}

// FuzzParseContentRange: whatever an upstream or a peer sends, an
// accepted Content-Range is a non-empty span inside the total and
// formats back to itself.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 10-19/20", "bytes 5-9/*", "bytes 0-0/1", "bytes 1-2", "bytes +1-2/3", "bytes 01-2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, end, total, ok := ParseContentRange(v)
		if !ok {
			return
		}
		if start < 0 || end < start || (total != -1 && total <= end) {
			t.Fatalf("%q accepted as %d-%d/%d", v, start, end, total)
		}
		tot := "*"
		if total >= 0 {
			tot = fmt.Sprint(total)
		}
		if back := fmt.Sprintf("bytes %d-%d/%s", start, end, tot); back != v && !leadingZeros(v) {
			t.Fatalf("%q accepted as %q", v, back)
		}
	})
}

// leadingZeros reports a number written with leading zeros, which
// ParseInt accepts and formatting drops.
func leadingZeros(v string) bool {
	for i := 0; i+1 < len(v); i++ {
		if v[i] == '0' && (i == 0 || v[i-1] < '0' || v[i-1] > '9') && v[i+1] >= '0' && v[i+1] <= '9' {
			return true
		}
	}
	return false
}
