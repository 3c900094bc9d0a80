package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// repoRoot returns the module root (the directory holding go.mod).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// readRepoFile returns a file of the repository as a string.
func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Patterns that find the environment variables the binary reads: the
// settings table of config/load.go ({"NAME", "yaml.path", ...}) and
// direct lookups (env("NAME"), os.Getenv("NAME")).
var (
	envTableRe  = regexp.MustCompile(`\{"([A-Z][A-Z0-9_]*)",\s*"([A-Za-z0-9.]+)"`)
	envLookupRe = regexp.MustCompile(`(?:\benv|Getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"\)`)
	flagApplyRe = regexp.MustCompile(`apply\("([a-z0-9-]+)",\s*"([A-Za-z0-9.]+)"`)
)

// goSources returns the non-test Go files of the given repository
// directories, concatenated.
func goSources(t *testing.T, dirs ...string) string {
	t.Helper()
	var b strings.Builder
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(repoRoot(t), d, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// binaryEnv returns every environment variable the binary reads, mapped
// to the YAML path it sets ("" for variables without one: REGISTRIES,
// AUTH_REGISTRIES and its delimiters, CONFIG_FILE).
func binaryEnv(t *testing.T) map[string]string {
	t.Helper()
	src := goSources(t, "config", "cmd/container-registry-proxy")
	env := map[string]string{}
	for _, m := range envLookupRe.FindAllStringSubmatch(src, -1) {
		env[m[1]] = ""
	}
	for _, m := range envTableRe.FindAllStringSubmatch(src, -1) {
		env[m[1]] = m[2]
	}
	if len(env) < 20 {
		t.Fatalf("found only %d environment variables in config/ and cmd/: the patterns no longer match the code", len(env))
	}
	return env
}

// flagPaths maps the flags of config/load.go's applyFlags to the YAML
// path each sets.
func flagPaths(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range flagApplyRe.FindAllStringSubmatch(goSources(t, "config"), -1) {
		out["--"+m[1]] = m[2]
	}
	if len(out) == 0 {
		t.Fatal("no applyFlags calls found in config/: the pattern no longer matches the code")
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readmeSection returns the text of the README section with the given
// "## " heading, up to the next one.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme := readRepoFile(t, "README.md")
	start := strings.Index(readme, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no section %q", "## "+heading)
	}
	rest := readme[start+len(heading)+5:]
	if end := strings.Index(rest, "\n## "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// readmeBuild returns, from the README's "Build the container image"
// section, the go build command and the image name given to podman build
// -t.
func readmeBuild(t *testing.T) (goBuild, image string) {
	t.Helper()
	sec := readmeSection(t, "Build the container image")
	for _, line := range strings.Split(sec, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "CGO_ENABLED=0 go build ") && goBuild == "":
			goBuild = line
		case strings.HasPrefix(line, "podman build ") && image == "":
			if m := regexp.MustCompile(`\s-t\s+(\S+)`).FindStringSubmatch(line); m != nil {
				image = m[1]
			}
		}
	}
	if goBuild == "" {
		t.Fatal(`README.md "Build the container image" shows no "CGO_ENABLED=0 go build" command`)
	}
	if image == "" {
		t.Fatal(`README.md "Build the container image" shows no "podman build ... -t NAME" command`)
	}
	return goBuild, image
}
