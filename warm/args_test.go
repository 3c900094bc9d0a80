package warm

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/spf13/pflag"
)

// parse runs ParseArgs on a flag set that also holds a caller's own
// flag, as the warm subcommand's does.
func parse(args []string, stdin string) (Args, *pflag.FlagSet, error) {
	fs := pflag.NewFlagSet("warm", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Bool("direct", false, "the caller's own flag")
	a, err := ParseArgs(fs, args, strings.NewReader(stdin))
	return a, fs, err
}

// TestParseArgs: the warm command's flags become Options and a list of
// images, each once, from arguments, list files and stdin.
func TestParseArgs(t *testing.T) {
	t.Parallel()
	list := filepath.Join(t.TempDir(), "images.txt")
	if err := os.WriteFile(list, []byte("# images\nquay.io/org/app:v1\n\nalpine  # again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, fs, err := parse([]string{"alpine", "--proxy", "http://proxy:3128/", "--direct", "--file", list, "--file", "-",
		"--platform", "linux/arm64,linux/amd64", "--platform", "all", "--user", "ci:s3:cr3t", "--jobs", "8"}, "busybox:1\n")
	if err != nil {
		t.Fatal(err)
	}
	var images []string
	for _, r := range a.Images {
		images = append(images, r.String())
	}
	if want := []string{"docker.io/library/alpine:latest", "quay.io/org/app:v1", "docker.io/library/busybox:1"}; !slices.Equal(images, want) {
		t.Errorf("images %q, want %q", images, want)
	}
	if direct, _ := fs.GetBool("direct"); !direct {
		t.Error("the caller's own flag was not parsed")
	}
	o := a.Options
	if a.Proxy != "http://proxy:3128" || o.Jobs != 8 || !o.AllPlatforms || len(o.Platforms) != 2 ||
		formatPlatform(o.Platforms[0]) != "linux/arm64/v8" || o.Credentials != (auth.Credentials{Username: "ci", Password: "s3:cr3t"}) {
		t.Errorf("parsed %+v", a)
	}
	if _, err := New(a.Proxy, a.Options); err != nil {
		t.Errorf("New with the parsed options: %v", err)
	}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		a, _, err := parse([]string{"alpine"}, "")
		if err != nil || a.Proxy != "" || a.Options.Jobs != DefaultJobs || a.Options.Platforms != nil || a.Options.AllPlatforms {
			t.Fatalf("%+v, %v", a, err)
		}
	})
}

// TestParseArgsRefuses: bad arguments are refused with a message naming
// the flag or the image; help is pflag.ErrHelp.
func TestParseArgsRefuses(t *testing.T) {
	t.Parallel()
	list := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(list, []byte("# images\nalpine\n\nBAD\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no images", []string{"--proxy", "http://127.0.0.1:1"}, "no images given"},
		{"bad image", []string{"Alpine"}, "lowercase"},
		{"bad platform", []string{"--platform", "linux", "alpine"}, "--platform"},
		{"unknown flag", []string{"--frobnicate", "alpine"}, "frobnicate"},
		{"bad proxy URL", []string{"--proxy", "ftp://x", "alpine"}, "--proxy"},
		{"missing list file", []string{"--file", "/nonexistent/list"}, "--file"},
		{"bad name in list file", []string{"--file", list}, `"BAD"`},
		{"bad jobs", []string{"--jobs", "0", "alpine"}, "--jobs"},
		{"bad user", []string{"--user", "nopass", "alpine"}, "--user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := parse(tc.args, ""); err == nil || !strings.Contains(err.Error(), tc.msg) || errors.Is(err, pflag.ErrHelp) {
				t.Fatalf("error %v, want one with %q", err, tc.msg)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		_, fs, err := parse([]string{"--help"}, "")
		if !errors.Is(err, pflag.ErrHelp) || !strings.Contains(fs.FlagUsages(), "--platform") || !strings.Contains(fs.FlagUsages(), "--direct") {
			t.Fatalf("error %v; usages:\n%s", err, fs.FlagUsages())
		}
	})
}
