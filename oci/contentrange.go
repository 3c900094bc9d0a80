package oci

import (
	"strconv"
	"strings"
)

// ParseContentRange reads a Content-Range header of a 206 answer,
// "bytes <start>-<end>/<total>", where total may be "*" (then -1). It
// reports false for anything else, or for a span that does not fit the
// total: a resumed download trusts no offset it did not ask for.
func ParseContentRange(v string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	span, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	first, last, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || first[0] == '+' || last[0] == '+' {
		return 0, 0, 0, false
	}
	if tot == "*" {
		return start, end, -1, true
	}
	total, err := strconv.ParseInt(tot, 10, 64)
	if err != nil || tot[0] == '+' || total <= end {
		return 0, 0, 0, false
	}
	return start, end, total, true
}
