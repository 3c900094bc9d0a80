package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"gopkg.in/yaml.v3"
)

// instruction is one Containerfile instruction with its continuation
// lines joined.
type instruction struct {
	line  int               // first line, from 1
	cmd   string            // upper case: FROM, RUN, COPY…
	flags map[string]string // leading --name=value options (--from, --chown)
	args  string            // the rest, raw
}

// stage is one FROM and the instructions after it.
type stage struct {
	name, base string
	instrs     []instruction
}

// flagsFor lists the instructions whose leading --options are flags.
var flagsFor = map[string]bool{"FROM": true, "COPY": true, "ADD": true, "RUN": true, "HEALTHCHECK": true}

// parseContainerfile splits text into instructions: comment and empty
// lines are skipped (inside continuations too, as Docker does), lines
// ending with a backslash continue on the next.
func parseContainerfile(text string) ([]instruction, error) {
	var (
		out     []instruction
		cur     strings.Builder
		curLine int
	)
	flush := func() error {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return nil
		}
		cmd, rest, _ := strings.Cut(s, " ")
		in := instruction{line: curLine, cmd: strings.ToUpper(cmd), flags: map[string]string{}}
		rest = strings.TrimSpace(rest)
		for flagsFor[in.cmd] && strings.HasPrefix(rest, "--") {
			word, after, _ := strings.Cut(rest, " ")
			name, value, ok := strings.Cut(strings.TrimPrefix(word, "--"), "=")
			if !ok {
				return fmt.Errorf("line %d: option %s without a value", curLine, word)
			}
			in.flags[name] = value
			rest = strings.TrimSpace(after)
		}
		in.args = rest
		out = append(out, in)
		return nil
	}
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			curLine = i + 1
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(body)
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: continuation at the end of the file", curLine)
	}
	return out, nil
}

// stages groups instructions by FROM.
func stages(t *testing.T, instrs []instruction) []stage {
	t.Helper()
	var out []stage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			words := strings.Fields(in.args)
			st := stage{base: words[0]}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			} else if len(words) != 1 {
				t.Fatalf("Containerfile line %d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
			}
			out = append(out, st)
			continue
		}
		if len(out) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Containerfile line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		out[len(out)-1].instrs = append(out[len(out)-1].instrs, in)
	}
	if len(out) < 2 {
		t.Fatalf("Containerfile has %d stage(s); want a build stage and a runtime stage", len(out))
	}
	return out
}

// containerfile parses the repository's Containerfile.
func containerfile(t *testing.T) []stage {
	t.Helper()
	instrs, err := parseContainerfile(readRepoFile(t, "Containerfile"))
	if err != nil {
		t.Fatalf("Containerfile: %v", err)
	}
	return stages(t, instrs)
}

// find returns the stage's instructions of one kind.
func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// jsonArgs reads an exec-form argument list (["a", "b"]).
func jsonArgs(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil || len(out) == 0 {
		t.Fatalf("Containerfile line %d: %s %s: want a JSON array (exec form)", in.line, in.cmd, s)
	}
	return out
}

// shellWords splits s as Docker's word lexer does for ENV: white space
// separates words; '…' is literal; in "…" a backslash escapes only " $
// and itself; elsewhere a backslash escapes the next character.
func shellWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"$\`, s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf(`unterminated " in %q`, s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// imageEnv returns the final stage's ENV settings in order.
func imageEnv(t *testing.T, st stage) (names []string, values map[string]string) {
	t.Helper()
	values = map[string]string{}
	for _, in := range st.find("ENV") {
		words, err := shellWords(in.args)
		if err != nil {
			t.Fatalf("Containerfile line %d: ENV: %v", in.line, err)
		}
		for _, w := range words {
			name, value, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("Containerfile line %d: ENV %q: want NAME=value pairs", in.line, w)
			}
			if strings.Contains(value, "$") {
				t.Errorf("Containerfile line %d: ENV %s=%s: no variable expansion expected in a default", in.line, name, value)
			}
			if _, dup := values[name]; dup {
				t.Errorf("Containerfile line %d: ENV %s set twice", in.line, name)
			}
			names = append(names, name)
			values[name] = value
		}
	}
	return names, values
}

// goBuildRun returns the build stage's RUN that runs go build.
func goBuildRun(t *testing.T, st stage) instruction {
	t.Helper()
	var found []instruction
	for _, in := range st.find("RUN") {
		if strings.Contains(in.args, "go build") {
			found = append(found, in)
		}
	}
	if len(found) != 1 {
		t.Fatalf("build stage %q has %d RUN instructions with go build; want 1", st.name, len(found))
	}
	return found[0]
}

// goBuildOutput returns the -o argument of a go build command.
func goBuildOutput(t *testing.T, cmd string) string {
	t.Helper()
	m := regexp.MustCompile(`\s-o\s+(\S+)`).FindStringSubmatch(cmd)
	if m == nil {
		t.Fatalf("go build command has no -o: %s", cmd)
	}
	return m[1]
}

func TestContainerfileStages(t *testing.T) {
	t.Parallel()
	sts := containerfile(t)
	build, runtime := sts[0], sts[len(sts)-1]
	if build.name == "" {
		t.Errorf("the first stage (%s) has no name (FROM … AS build)", build.base)
	}
	goMod := readRepoFile(t, "go.mod")
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	image, tag, _ := strings.Cut(build.base, ":")
	if path.Base(image) != "golang" || !strings.HasPrefix(tag, m[1]) {
		t.Errorf("build stage FROM %s: want a golang:%s… image (go.mod says go %s)", build.base, m[1], m[1])
	}
	if strings.Contains(runtime.base, "golang") || runtime.base == build.base {
		t.Errorf("runtime stage FROM %s: want a minimal image, not the toolchain", runtime.base)
	}
	if got := runtime.find("FROM"); len(got) != 0 {
		t.Fatal("unreachable: FROM inside a stage")
	}
}

// TestContainerfileCopySources: sources from the build context exist in
// the repository (globs allowed); sources from another stage are made by
// it (go build -o, or a RUN that names the path).
func TestContainerfileCopySources(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	sts := containerfile(t)
	byName := map[string]stage{}
	for i, st := range sts {
		for _, in := range append(st.find("COPY"), st.find("ADD")...) {
			words := strings.Fields(in.args)
			if strings.HasPrefix(in.args, "[") {
				words = jsonArgs(t, in, in.args)
			}
			if len(words) < 2 {
				t.Errorf("Containerfile line %d: %s %s: want SRC… DEST", in.line, in.cmd, in.args)
				continue
			}
			srcs := words[:len(words)-1]
			from, fromStage := in.flags["from"]
			if !fromStage {
				for _, src := range srcs {
					matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(src)))
					if err != nil || len(matches) == 0 {
						t.Errorf("Containerfile line %d: %s source %q does not exist in the repository", in.line, in.cmd, src)
					}
				}
				continue
			}
			other, ok := byName[from]
			if !ok {
				t.Errorf("Containerfile line %d: --from=%s names no earlier stage", in.line, from)
				continue
			}
			for _, src := range srcs {
				if !stageMakes(t, other, src) {
					t.Errorf("Containerfile line %d: %s is not made by stage %s (neither go build -o nor a RUN names it)", in.line, src, from)
				}
			}
		}
		if st.name != "" {
			byName[st.name] = sts[i]
		}
	}
}

// stageMakes reports whether a RUN of st writes p: go build -o p, or a
// command naming p or a directory above it.
func stageMakes(t *testing.T, st stage, p string) bool {
	p = path.Clean(p)
	for _, in := range st.find("RUN") {
		if strings.Contains(in.args, "go build") && path.Clean(goBuildOutput(t, in.args)) == p {
			return true
		}
		for _, w := range strings.Fields(in.args) {
			if w = path.Clean(w); strings.HasPrefix(w, "/") && (w == p || strings.HasPrefix(w, p+"/")) {
				return true
			}
		}
	}
	return false
}

// TestContainerfileBuildCommandIsREADMEs: the build stage compiles with
// exactly the command the README documents, and the variables it stamps
// exist in package main.
func TestContainerfileBuildCommandIsREADMEs(t *testing.T) {
	t.Parallel()
	build := containerfile(t)[0]
	run := goBuildRun(t, build)
	got := strings.Join(strings.Fields(run.args), " ")
	want, _ := readmeBuild(t)
	want = strings.Join(strings.Fields(want), " ")
	if got != want {
		t.Errorf("Containerfile line %d builds with\n  %s\nbut README.md documents\n  %s", run.line, got, want)
	}
	args := map[string]int{}
	for _, in := range build.find("ARG") {
		name, _, _ := strings.Cut(in.args, "=")
		args[name] = in.line
	}
	mainSrc := goSources(t, "cmd/container-registry-proxy")
	for _, m := range regexp.MustCompile(`-X main\.(\w+)=\$\{?(\w+)\}?`).FindAllStringSubmatch(got, -1) {
		if line, ok := args[m[2]]; !ok || line > run.line {
			t.Errorf("go build uses $%s, which no ARG of the build stage declares before line %d", m[2], run.line)
		}
		if !regexp.MustCompile(`(?m)^\s*` + m[1] + `\s*=\s*"`).MatchString(mainSrc) {
			t.Errorf("-X main.%s: package main has no string variable %s", m[1], m[1])
		}
	}
}

// TestContainerfileRuntime checks the runtime stage's contract: port,
// volumes owned by the non-root user, entrypoint, health check and the
// directories the environment points at.
func TestContainerfileRuntime(t *testing.T) {
	t.Parallel()
	sts := containerfile(t)
	build, rt := sts[0], sts[len(sts)-1]

	exposed := map[string]bool{}
	for _, in := range rt.find("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			exposed[strings.TrimSuffix(p, "/tcp")] = true
		}
	}
	if len(exposed) != 1 || !exposed["3128"] {
		t.Errorf("EXPOSE: got %v, want only 3128", sortedKeys(exposed))
	}

	vols := containerVolumes(t, rt)
	want := []string{"/ca", "/registry_proxy_mirror_cache"}
	if got := sortedKeys(vols); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("VOLUME: got %v, want %v", got, want)
	}

	users := rt.find("USER")
	if len(users) != 1 {
		t.Fatalf("runtime stage has %d USER instructions, want 1", len(users))
	}
	uid, gid := parseUser(t, users[0])
	if uid == 0 {
		t.Errorf("USER %s: the image must not run as root", users[0].args)
	}

	// Every volume is created by a COPY --chown=<USER> (owned by the user).
	owned := map[string]string{}
	for _, in := range rt.find("COPY") {
		words := strings.Fields(in.args)
		owned[path.Clean(words[len(words)-1])] = in.flags["chown"]
	}
	for v := range vols {
		if got, want := owned[v], fmt.Sprintf("%d:%d", uid, gid); got != want {
			t.Errorf("volume %s: made by COPY --chown=%q, want --chown=%s (the USER)", v, got, want)
		}
	}

	// ENTRYPOINT is the binary go build made, copied from the build stage.
	eps := rt.find("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("runtime stage has %d ENTRYPOINT instructions, want 1", len(eps))
	}
	entry := jsonArgs(t, eps[0], eps[0].args)
	out := goBuildOutput(t, goBuildRun(t, build).args)
	if src, ok := copiedFrom(rt, build.name, entry[0]); !ok || path.Clean(src) != path.Clean(out) {
		t.Errorf("ENTRYPOINT %s: not the binary go build writes (%s), copied --from=%s", entry[0], out, build.name)
	}
	// The entrypoint is the lean build; the full build lies beside it
	// under the name the lean one runs for the cloud storage drivers.
	outs := regexp.MustCompile(`\s-o\s+(\S+)`).FindAllStringSubmatch(goBuildRun(t, build).args, -1)
	builds := strings.Split(goBuildRun(t, build).args, "&&")
	if len(outs) != 2 || len(builds) != 2 || !strings.Contains(builds[0], "-tags lean") || strings.Contains(builds[1], "lean") {
		t.Errorf("build stage: want two go builds, the first -tags lean (the entrypoint) and the second full: %s", goBuildRun(t, build).args)
	} else if src, ok := copiedFrom(rt, build.name, entry[0]+"-full"); !ok || path.Clean(src) != path.Clean(outs[1][1]) {
		t.Errorf("%s-full: not the full build (%s) copied --from=%s; the lean entrypoint runs it for s3, gcs and azure", entry[0], outs[1][1], build.name)
	}

	// HEALTHCHECK runs the binary's healthcheck subcommand (no curl in a
	// distroless image).
	hcs := rt.find("HEALTHCHECK")
	if len(hcs) != 1 {
		t.Fatalf("runtime stage has %d HEALTHCHECK instructions, want 1", len(hcs))
	}
	cmd, ok := strings.CutPrefix(hcs[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s: want HEALTHCHECK [options] CMD [...]", hcs[0].args)
	}
	if hc := jsonArgs(t, hcs[0], strings.TrimSpace(cmd)); len(hc) != 2 || hc[0] != entry[0] || hc[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK CMD %v: want [%q, \"healthcheck\"]", hc, entry[0])
	}

	// The cache and the CA live on the volumes.
	_, env := imageEnv(t, rt)
	for _, name := range []string{"CACHE_DIRECTORY", "CA_DIRECTORY"} {
		if !vols[path.Clean(env[name])] {
			t.Errorf("ENV %s=%q is not one of the VOLUMEs %v", name, env[name], sortedKeys(vols))
		}
	}
}

// containerVolumes returns the runtime stage's VOLUME paths.
func containerVolumes(t *testing.T, rt stage) map[string]bool {
	t.Helper()
	vols := map[string]bool{}
	for _, in := range rt.find("VOLUME") {
		for _, v := range jsonArgs(t, in, in.args) {
			vols[path.Clean(v)] = true
		}
	}
	return vols
}

// parseUser reads USER uid:gid; both must be numeric, so that Kubernetes
// can check runAsNonRoot without an /etc/passwd lookup.
func parseUser(t *testing.T, in instruction) (uid, gid int) {
	t.Helper()
	u, g, ok := strings.Cut(in.args, ":")
	var err1, err2 error
	uid, err1 = strconv.Atoi(u)
	gid, err2 = strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("Containerfile line %d: USER %s: want numeric uid:gid", in.line, in.args)
	}
	return uid, gid
}

// copiedFrom returns the source of the COPY --from=stage that writes dest.
func copiedFrom(rt stage, from, dest string) (string, bool) {
	for _, in := range rt.find("COPY") {
		words := strings.Fields(in.args)
		if in.flags["from"] == from && len(words) == 2 && path.Clean(words[1]) == path.Clean(dest) {
			return words[0], true
		}
	}
	return "", false
}

// TestContainerfileEnvIsReadByBinary: every ENV of the image is a
// variable the binary reads.
func TestContainerfileEnvIsReadByBinary(t *testing.T) {
	t.Parallel()
	sts := containerfile(t)
	known := binaryEnv(t)
	names, _ := imageEnv(t, sts[len(sts)-1])
	if len(names) == 0 {
		t.Fatal("the runtime stage sets no ENV")
	}
	for _, n := range names {
		if _, ok := known[n]; !ok {
			t.Errorf("ENV %s: the binary does not read it (not found in config/ or cmd/)", n)
		}
	}
	for _, n := range []string{"REGISTRIES", "AUTH_REGISTRIES", "ENABLE_MANIFEST_CACHE", "CACHE_MAX_SIZE", "CACHE_DIRECTORY", "CA_DIRECTORY", "ALLOW_PUSH", "VERIFY_SSL"} {
		if !contains(names, n) {
			t.Errorf("ENV %s missing: the original project's defaults are part of the image", n)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestContainerfileEnvKeepsDefaults: the image's ENV values are the
// binary's defaults; only the directories differ from a run without any.
func TestContainerfileEnvKeepsDefaults(t *testing.T) {
	t.Parallel()
	sts := containerfile(t)
	_, env := imageEnv(t, sts[len(sts)-1])
	withImage, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the image's ENV does not load: %v", err)
	}
	dirsOnly := map[string]string{"CACHE_DIRECTORY": env["CACHE_DIRECTORY"], "CA_DIRECTORY": env["CA_DIRECTORY"]}
	plain, err := config.Load(nil, func(k string) string { return dirsOnly[k] })
	if err != nil {
		t.Fatal(err)
	}
	got, err := yaml.Marshal(withImage)
	if err != nil {
		t.Fatal(err)
	}
	want, err := yaml.Marshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) || len(withImage.AuthRegistries) != 0 {
		t.Errorf("the image's ENV changes the configuration beyond its directories:\nwith the image's ENV:\n%s\nwith the directories only:\n%s", got, want)
	}
}

// ignoreRule is one .dockerignore line, as Docker's pattern matcher reads
// it.
type ignoreRule struct {
	pattern string
	re      *regexp.Regexp
	negate  bool
}

// parseIgnore reads a .dockerignore file.
func parseIgnore(t *testing.T, text string) []ignoreRule {
	t.Helper()
	var rules []ignoreRule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{pattern: line}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, strings.TrimSpace(p)
		}
		line = path.Clean(strings.TrimPrefix(line, "/"))
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; c {
			case '*':
				if i+1 < len(line) && line[i+1] == '*' {
					i++
					if i+1 < len(line) && line[i+1] == '/' {
						i++
						b.WriteString("(.*/)?")
					} else {
						b.WriteString(".*")
					}
				} else {
					b.WriteString("[^/]*")
				}
			case '?':
				b.WriteString("[^/]")
			case '\\':
				if i+1 < len(line) {
					i++
					b.WriteString(regexp.QuoteMeta(line[i : i+1]))
				}
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		b.WriteString("$")
		re, err := regexp.Compile(b.String())
		if err != nil {
			t.Fatalf(".dockerignore pattern %q: %v", r.pattern, err)
		}
		r.re = re
		rules = append(rules, r)
	}
	return rules
}

// excludedBy returns the rule that leaves p (slash-separated, relative to
// the context) out of the build context, or "": the last rule matching p
// or a directory above it decides.
func excludedBy(rules []ignoreRule, p string) string {
	var candidates []string
	for dir := p; dir != "." && dir != "/"; dir = path.Dir(dir) {
		candidates = append(candidates, dir)
	}
	by := ""
	for _, r := range rules {
		for _, c := range candidates {
			if r.re.MatchString(c) {
				if r.negate {
					by = ""
				} else {
					by = r.pattern
				}
				break
			}
		}
	}
	return by
}

func TestIgnoreMatcher(t *testing.T) {
	t.Parallel()
	rules := parseIgnore(t, "**/*.test\n/bin\ndocs\n!docs/keep.md\n")
	for p, want := range map[string]bool{
		"a/b/x.test":       true,
		"x.test":           true,
		"bin":              true,
		"bin/tool":         true,
		"cmd/bin/tool":     false,
		"docs/a.md":        true,
		"docs/keep.md":     false,
		"main.go":          false,
		"cmd/x/main.go":    false,
		"cmd/x/main_test":  false,
		"cmd/x/main.test2": false,
	} {
		if got := excludedBy(rules, p) != ""; got != want {
			t.Errorf("%s excluded = %v, want %v", p, got, want)
		}
	}
}

// TestDockerignoreKeepsBuildInputs: nothing the binary is built from (Go
// files and embedded files of the module's packages, go.mod, go.sum) is
// left out of the build context.
func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	var rules []ignoreRule
	for _, name := range []string{".dockerignore", ".containerignore"} {
		if data, err := os.ReadFile(filepath.Join(root, name)); err == nil {
			rules = append(rules, parseIgnore(t, string(data))...)
		}
	}
	if len(rules) == 0 {
		t.Fatal("no .dockerignore: the build context would carry .git and local binaries")
	}
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,EmbedFiles,Module", "./cmd/container-registry-proxy")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	inputs := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			Dir                 string
			GoFiles, EmbedFiles []string
			Module              *struct{ Main bool }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			inputs = append(inputs, path.Join(filepath.ToSlash(rel), f))
		}
	}
	if len(inputs) < 20 {
		t.Fatalf("go list found only %d build inputs", len(inputs))
	}
	for _, p := range inputs {
		if by := excludedBy(rules, p); by != "" {
			t.Errorf("%s is needed by the build but .dockerignore excludes it (%q)", p, by)
		}
	}
	for _, p := range []string{".git/HEAD", "container-registry-proxy"} {
		if excludedBy(rules, p) == "" {
			t.Errorf("%s is not excluded from the build context", p)
		}
	}
}
