package warm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/spf13/pflag"
)

// Usage is the warm subcommand's help text; the flags follow it.
const Usage = `Usage: container-registry-proxy warm [flags] IMAGE...

Pulls images through a running proxy (or, with --direct, into the local
cache without one) so that the first real pull is a hit. IMAGE is a name as
docker takes it: alpine is docker.io/library/alpine:latest;
quay.io/org/app:v1, registry.local:5000/team/app@sha256:… name other
registries (they must be configured in the proxy).

Exit status: 0 when every image was warmed, 1 when any failed, 2 on bad
arguments.

Flags:
`

// Args are the warm command's own arguments: what to warm, through which
// proxy, and how.
type Args struct {
	// Images are the images named as arguments and in --file lists,
	// normalised, each once, in the order given.
	Images []reference.Named
	// Proxy is --proxy, checked (http(s)://host:port) and without a
	// trailing slash; "" when not given.
	Proxy string
	// Options hold --platform, --user and --jobs; the caller adds the
	// rest (Namespaces, UserAgent, Progress).
	Options Options
}

// flags are the values of warm's flags.
type flags struct {
	platforms, files []string
	proxy, user      string
	jobs             int
}

// register defines warm's flags on fs.
func (f *flags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.platforms, "platform", nil, "os/arch[/variant] to warm from multi-platform images (repeatable, or comma-separated; \"all\" for every one; default linux/amd64)")
	fs.StringArrayVar(&f.files, "file", nil, "read image names from this file, one per line (# comments; repeatable; - for stdin)")
	fs.StringVar(&f.proxy, "proxy", "", "the proxy's base URL (default http://127.0.0.1:<port of the configured listen>)")
	fs.StringVar(&f.user, "user", "", "USER:PASSWORD of a proxy user (clientAuth.htpasswd), for registries served to proxy users only")
	fs.IntVar(&f.jobs, "jobs", DefaultJobs, "blobs fetched at once per image")
}

// ParseArgs defines warm's flags (--platform, --file, --proxy, --user,
// --jobs) on fs, which may hold the caller's own flags, parses args with
// it and checks the values. For -h/--help it returns pflag.ErrHelp (then
// fs.FlagUsages lists every flag); any other error is a bad argument and
// names it. "--file -" reads stdin.
func ParseArgs(fs *pflag.FlagSet, args []string, stdin io.Reader) (Args, error) {
	var f flags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return Args{}, err // pflag names the flag; ErrHelp as is
	}
	var a Args
	if f.jobs < 1 || f.jobs > MaxJobs {
		return a, fmt.Errorf("--jobs %d: want 1 to %d", f.jobs, MaxJobs)
	}
	a.Options.Jobs = f.jobs
	if f.user != "" {
		u, p, ok := strings.Cut(f.user, ":")
		if !ok || u == "" {
			return a, errors.New("--user: want USER:PASSWORD")
		}
		a.Options.Credentials = auth.Credentials{Username: u, Password: p}
	}
	if f.proxy != "" {
		u, err := parseProxyURL(f.proxy)
		if err != nil {
			return a, fmt.Errorf("--proxy: %w", err)
		}
		a.Proxy = u.String()
	}
	if err := f.parsePlatforms(&a.Options); err != nil {
		return a, err
	}
	names, err := f.names(fs.Args(), stdin)
	if err != nil {
		return a, err
	}
	a.Images, err = parseImages(names)
	return a, err
}

// parsePlatforms sets Platforms and AllPlatforms from --platform.
func (f *flags) parsePlatforms(o *Options) error {
	for _, arg := range f.platforms {
		for _, one := range strings.Split(arg, ",") {
			if strings.TrimSpace(one) == "all" {
				o.AllPlatforms = true
				continue
			}
			p, err := ParsePlatform(one)
			if err != nil {
				return fmt.Errorf("--platform: %w", err)
			}
			o.Platforms = append(o.Platforms, p)
		}
	}
	return nil
}

// names are the image names of the arguments and the --file lists.
func (f *flags) names(args []string, stdin io.Reader) ([]string, error) {
	names := args
	for _, path := range f.files {
		more, err := readListFile(path, stdin)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		names = append(names, more...)
	}
	if len(names) == 0 {
		return nil, errors.New("no images given: name them as arguments or with --file")
	}
	return names, nil
}

// readListFile reads the image list at path ("-": stdin).
func readListFile(path string, stdin io.Reader) ([]string, error) {
	if path == "-" {
		return ReadList(stdin)
	}
	f, err := os.Open(path) //nolint:gosec // G304: the user names the file to read
	if err != nil {
		return nil, fmt.Errorf("image list: %w", err)
	}
	names, err := ReadList(f)
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return names, nil
}

// parseImages parses names, dropping repeats.
func parseImages(names []string) ([]reference.Named, error) {
	var out []reference.Named
	seen := map[string]bool{}
	for _, n := range names {
		ref, err := ParseReference(n)
		if err != nil {
			return nil, err
		}
		if !seen[ref.String()] {
			seen[ref.String()] = true
			out = append(out, ref)
		}
	}
	return out, nil
}
