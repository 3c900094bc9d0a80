package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// sizeUnits maps nginx size suffixes (either case) to their multipliers.
var sizeUnits = []struct {
	name string
	n    int64
}{
	{"t", 1 << 40},
	{"g", 1 << 30},
	{"m", 1 << 20},
	{"k", 1 << 10},
}

// ParseSize parses a byte count in nginx syntax, as CACHE_MAX_SIZE and
// CACHE_MIN_FREE were written: a number of bytes, optionally followed by one
// of k, m, g, t (either case; powers of 1024): "32g", "512k", "1048576".
// Empty, negative, fractional and overflowing values and unknown units are
// rejected with a *ValueError.
func ParseSize(s string) (int64, error) {
	fail := func(format string, a ...any) (int64, error) {
		return 0, &ValueError{Kind: "size", Value: s, Reason: fmt.Sprintf(format, a...)}
	}
	in := strings.TrimSpace(s)
	if in == "" {
		return fail("empty")
	}
	if in[0] == '-' {
		return fail("negative sizes are not allowed")
	}
	j := 0
	for j < len(in) && in[j] >= '0' && in[j] <= '9' {
		j++
	}
	if j == 0 {
		return fail("missing number")
	}
	n, err := strconv.ParseInt(in[:j], 10, 64)
	if err != nil {
		return fail("out of range")
	}
	unit := in[j:]
	if unit == "" {
		return n, nil
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/u.n {
				return fail("out of range")
			}
			return n * u.n, nil
		}
	}
	return fail("unknown unit %q (want k, m, g or t)", unit)
}

// String formats the size with the largest exact unit ("32g", "1536m",
// "100"), so that ParseSize(s.String()) == s.
func (s Size) String() string {
	n := int64(s)
	if n > 0 {
		for _, u := range sizeUnits {
			if n%u.n == 0 {
				return strconv.FormatInt(n/u.n, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10)
}

// UnmarshalYAML reads a size in nginx syntax ("32g", "512k", or bytes).
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &ValueError{Kind: "size", Value: "", Reason: "expected a scalar such as 32g or 512m"}
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}
