package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const day = 24 * time.Hour

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
	}{
		{"minutes", "10m", 10 * time.Minute},
		{"days", "60d", 60 * day},
		{"seconds", "300s", 300 * time.Second},
		{"bare number is seconds", "60", time.Minute},
		{"zero", "0", 0},
		{"combined", "1h30m", 90 * time.Minute},
		{"combined with spaces", "1d 12h", 36 * time.Hour},
		{"unit-less last part is seconds", "1m30", 90 * time.Second},
		{"milliseconds", "1s500ms", 1500 * time.Millisecond},
		{"weeks", "2w", 14 * day},
		{"month is 30 days", "1M", 30 * day},
		{"year is 365 days", "1y", 365 * day},
		{"all units", "1y1M1w1d1h1m1s1ms", 365*day + 30*day + 7*day + day + time.Hour + time.Minute + time.Second + time.Millisecond},
		{"surrounding space", " 10m ", 10 * time.Minute},
		{"largest representable years", "292y", 292 * 365 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDuration(tc.in)
			if err != nil {
				t.Fatalf("ParseDuration(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseDurationErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, reason string
	}{
		{"empty", "", "empty"},
		{"blank", "  ", "empty"},
		{"negative", "-5m", "negative"},
		{"unknown unit", "10x", `unknown unit "x"`},
		{"go-style micro", "10us", `unknown unit "us"`},
		{"word unit", "10min", `unknown unit "min"`},
		{"unit without number", "h", "missing number"},
		{"fraction", "1.5h", `unexpected character '.'`},
		{"out of order", "30m1h", "out of order"},
		{"repeated unit", "1h1h", "repeated"},
		{"seconds twice", "1s5", "repeated"},
		{"overflow in unit", "300y", "out of range"},
		{"overflow in number", "99999999999999999999", "out of range"},
		{"overflow in sum", "292y200d", "out of range"},
		{"bare number then unit", "10 m", "must come last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseDuration(tc.in)
			var ve *ValueError
			if !errors.As(err, &ve) {
				t.Fatalf("ParseDuration(%q) error = %v, want a *ValueError", tc.in, err)
			}
			if ve.Kind != "duration" || ve.Value != tc.in || !strings.Contains(ve.Reason, tc.reason) {
				t.Errorf("ParseDuration(%q) error = %q, want reason containing %q", tc.in, err, tc.reason)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    time.Duration
		want string
	}{
		{"zero", 0, "0s"},
		{"minutes", 10 * time.Minute, "10m"},
		{"days stay days", 60 * day, "60d"},
		{"combined", 90 * time.Minute, "1h30m"},
		{"milliseconds", 1500 * time.Millisecond, "1s500ms"},
		{"sub-millisecond falls back", 1500 * time.Microsecond, "1.5ms"},
		{"negative falls back", -time.Second, "-1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Duration(tc.d).String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if tc.d >= 0 && tc.d%time.Millisecond == 0 {
				back, err := ParseDuration(tc.want)
				if err != nil || back != tc.d {
					t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.want, back, err, tc.d)
				}
			}
		})
	}
}

func TestDurationYAML(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc string
		want      time.Duration
		wantErr   string
	}{
		{"nginx string", "d: 60d", 60 * day, ""},
		{"integer is seconds", "d: 300", 300 * time.Second, ""},
		{"bad unit", "d: 10x", 0, `invalid duration "10x": unknown unit "x"`},
		{"not a scalar", "d: [1]", 0, "expected a scalar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var v struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte(tc.doc), &v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || time.Duration(v.D) != tc.want {
				t.Fatalf("got %v, %v; want %v", time.Duration(v.D), err, tc.want)
			}
		})
	}
}
