package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// durationUnits are nginx's time units, largest first. nginx requires them in
// this order, each at most once ("1h30m" is valid, "30m1h" is not).
var durationUnits = []struct {
	name string
	d    time.Duration
}{
	{"y", 365 * 24 * time.Hour},
	{"M", 30 * 24 * time.Hour},
	{"w", 7 * 24 * time.Hour},
	{"d", 24 * time.Hour},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
	{"ms", time.Millisecond},
}

// secondsRank is the index of "s" in durationUnits: a trailing bare number
// means seconds.
const secondsRank = 6

// ParseDuration parses a duration in nginx syntax, as the original
// project's variables (MANIFEST_CACHE_*_TIME, CACHE_INACTIVE_TIME,
// PROXY_*_TIMEOUT) were written: numbers with the units ms, s, m, h, d, w,
// M (30 days) and y (365 days), combinable from the largest unit down
// ("1h30m", "1d 12h"); a bare number, or a unit-less last part, means
// seconds ("300" is "300s"). Empty, negative, fractional and overflowing
// values and unknown units are rejected with a *ValueError.
func ParseDuration(s string) (time.Duration, error) {
	fail := func(reason string) (time.Duration, error) {
		return 0, &ValueError{Kind: "duration", Value: s, Reason: reason}
	}
	in := strings.TrimSpace(s)
	if in == "" {
		return fail("empty")
	}
	if in[0] == '-' {
		return fail("negative durations are not allowed")
	}
	var total time.Duration
	last := -1 // rank of the previous unit
	for i := skipBlanks(in, 0); i < len(in); i = skipBlanks(in, i) {
		n, rank, next, reason := durationPart(in, i)
		if reason != "" {
			return fail(reason)
		}
		if rank <= last {
			return fail(fmt.Sprintf("unit %q repeated or out of order (largest unit first)", durationUnits[rank].name))
		}
		last, i = rank, next
		var ok bool
		if total, ok = addDuration(total, n, durationUnits[rank].d); !ok {
			return fail("out of range")
		}
	}
	return total, nil
}

// durationPart reads the number and unit at in[i:] ("90m", or a bare
// "30" last). It returns the number, the unit's rank in durationUnits and
// where the next part may start, or why the part is invalid.
func durationPart(in string, i int) (n int64, rank, next int, reason string) {
	j := i
	for j < len(in) && in[j] >= '0' && in[j] <= '9' {
		j++
	}
	if j == i {
		if isLetter(in[i]) {
			return 0, 0, 0, fmt.Sprintf("missing number before unit %q", letters(in[i:]))
		}
		return 0, 0, 0, fmt.Sprintf("unexpected character %q", in[i])
	}
	n, err := strconv.ParseInt(in[i:j], 10, 64)
	if err != nil {
		return 0, 0, 0, "out of range"
	}
	unit := letters(in[j:])
	next = j + len(unit)
	if unit != "" {
		if rank = unitRank(unit); rank < 0 {
			return 0, 0, 0, fmt.Sprintf("unknown unit %q (want ms, s, m, h, d, w, M or y)", unit)
		}
		return n, rank, next, ""
	}
	if next < len(in) && !isBlank(in[next]) {
		return 0, 0, 0, fmt.Sprintf("unexpected character %q", in[next])
	}
	if strings.TrimSpace(in[next:]) != "" {
		return 0, 0, 0, "a number without unit (seconds) must come last"
	}
	return n, secondsRank, next, ""
}

// addDuration returns total + n*unit, and false when that overflows.
func addDuration(total time.Duration, n int64, unit time.Duration) (time.Duration, bool) {
	if n > int64(math.MaxInt64/unit) {
		return 0, false
	}
	part := time.Duration(n) * unit
	if total > math.MaxInt64-part {
		return 0, false
	}
	return total + part, true
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// skipBlanks returns the index of the first non-blank byte of in from i.
func skipBlanks(in string, i int) int {
	for i < len(in) && isBlank(in[i]) {
		i++
	}
	return i
}

func unitRank(unit string) int {
	for i, u := range durationUnits {
		if u.name == unit {
			return i
		}
	}
	return -1
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func letters(s string) string {
	i := 0
	for i < len(s) && isLetter(s[i]) {
		i++
	}
	return s[:i]
}

// String formats d in nginx syntax with the exact units d, h, m, s and ms
// ("60d", "1h30m", "0s"), so that ParseDuration(d.String()) == d. Values
// that nginx syntax cannot express (negative or sub-millisecond) use
// time.Duration's format.
func (d Duration) String() string {
	td := time.Duration(d)
	if td == 0 {
		return "0s"
	}
	if td < 0 || td%time.Millisecond != 0 {
		return td.String()
	}
	var b strings.Builder
	for _, u := range durationUnits[3:] { // d h m s ms: always exact
		if n := td / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			td -= n * u.d
		}
	}
	return b.String()
}

// UnmarshalYAML reads a duration in nginx syntax ("10m", "60d"; a bare
// number is seconds).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &ValueError{Kind: "duration", Value: "", Reason: "expected a scalar such as 10m or 60d"}
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
