package config

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want int64
	}{
		{"bytes", "1048576", 1 << 20},
		{"zero", "0", 0},
		{"kilo lower", "512k", 512 << 10},
		{"kilo upper", "512K", 512 << 10},
		{"mega", "100m", 100 << 20},
		{"mega upper", "100M", 100 << 20},
		{"giga", "32g", 32 << 30},
		{"giga upper", "1G", 1 << 30},
		{"tera", "2t", 2 << 40},
		{"tera upper", "2T", 2 << 40},
		{"surrounding space", " 1g ", 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSize(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseSizeErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, reason string
	}{
		{"empty", "", "empty"},
		{"negative", "-1g", "negative"},
		{"unknown unit", "10x", `unknown unit "x"`},
		{"bytes suffix", "10kb", `unknown unit "kb"`},
		{"no number", "g", "missing number"},
		{"fraction", "1.5g", `unknown unit ".5g"`},
		{"overflow in number", "99999999999999999999", "out of range"},
		{"overflow in unit", "9000000t", "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSize(tc.in)
			var ve *ValueError
			if !errors.As(err, &ve) || ve.Kind != "size" || !strings.Contains(ve.Reason, tc.reason) {
				t.Fatalf("ParseSize(%q) error = %v, want a size error containing %q", tc.in, err, tc.reason)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		n    int64
		want string
	}{
		{"zero", 0, "0"},
		{"bytes", 100, "100"},
		{"giga", 32 << 30, "32g"},
		{"not a whole giga", 1536 << 20, "1536m"},
		{"tera", 1 << 40, "1t"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Size(tc.n).String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if back, err := ParseSize(tc.want); err != nil || back != tc.n {
				t.Errorf("ParseSize(%q) = %d, %v", tc.want, back, err)
			}
		})
	}
}

func TestSizeYAML(t *testing.T) {
	t.Parallel()
	var v struct {
		S Size `yaml:"s"`
	}
	if err := yaml.Unmarshal([]byte("s: 32g"), &v); err != nil || v.S != 32<<30 {
		t.Fatalf("got %d, %v", v.S, err)
	}
	if err := yaml.Unmarshal([]byte("s: 3x"), &v); err == nil || !strings.Contains(err.Error(), `invalid size "3x"`) {
		t.Fatalf("error = %v", err)
	}
}
