package deploytest

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"gopkg.in/yaml.v3"
)

const configDoc = "docs/configuration.md"

// docRow is one row of a settings table of docs/configuration.md:
// | YAML key | environment | flag | default | meaning |.
type docRow struct {
	line    int
	keys    []string // YAML paths, registries[].host style; none for env-only rows
	env     []string
	flags   []string
	deflt   string // the default cell, raw
	meaning string
}

var codeSpanRe = regexp.MustCompile("`([^`]+)`")

// splitRow splits a Markdown table row on unescaped pipes and unescapes
// "\|" in the cells.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func codeSpans(cell string) []string {
	var out []string
	for _, m := range codeSpanRe.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// docRows reads every settings table: those whose header starts with
// "YAML key".
func docRows(t *testing.T) []docRow {
	t.Helper()
	var rows []docRow
	inTable := false
	for i, line := range strings.Split(readRepoFile(t, configDoc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if strings.EqualFold(cells[0], "YAML key") {
			if len(cells) != 5 {
				t.Fatalf("%s:%d: a settings table has 5 columns: YAML key | environment | flag | default | meaning", configDoc, i+1)
			}
			inTable = true
			continue
		}
		if !inTable || strings.Trim(cells[0], "-: ") == "" {
			continue
		}
		if len(cells) != 5 {
			t.Fatalf("%s:%d: %d cells, want 5", configDoc, i+1, len(cells))
		}
		r := docRow{line: i + 1, keys: codeSpans(cells[0]), deflt: cells[3], meaning: cells[4]}
		for _, e := range codeSpans(cells[1]) {
			name, _, _ := strings.Cut(e, "=")
			r.env = append(r.env, name)
		}
		for _, f := range codeSpans(cells[2]) {
			name, _, _ := strings.Cut(f, " ")
			name, _, _ = strings.Cut(name, "=")
			r.flags = append(r.flags, name)
		}
		if len(r.keys) == 0 && len(r.env) == 0 && len(r.flags) == 0 {
			t.Fatalf("%s:%d: a row without key, variable or flag", configDoc, i+1)
		}
		if strings.TrimSpace(r.meaning) == "" {
			t.Errorf("%s:%d: %v has no meaning", configDoc, i+1, r.keys)
		}
		rows = append(rows, r)
	}
	if len(rows) < 30 {
		t.Fatalf("%s: found %d settings rows; the tables (| YAML key | environment | flag | default | meaning |) are missing or malformed", configDoc, len(rows))
	}
	return rows
}

// yamlKey is one key of the configuration file.
type yamlKey struct {
	path  string
	typ   reflect.Type
	value reflect.Value // the default (config.Default(); zero inside lists)
}

// yamlKeys walks the Config struct by its yaml tags. Elements of lists of
// structs are written registries[].host.
func yamlKeys() []yamlKey {
	var out []yamlKey
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		typ := v.Type()
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			p := name
			if prefix != "" {
				p = prefix + "." + name
			}
			fv := v.Field(i)
			out = append(out, yamlKey{path: p, typ: f.Type, value: fv})
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(fv, p)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(reflect.New(f.Type.Elem()).Elem(), p+"[]")
			}
		}
	}
	walk(reflect.ValueOf(config.Default()).Elem(), "")
	return out
}

// TestConfigDocCoversEveryKey: every key of the configuration file (the
// Config struct, which config.yml.example documents key by key) has a row
// in docs/configuration.md, and every key named there exists.
func TestConfigDocCoversEveryKey(t *testing.T) {
	t.Parallel()
	rows := docRows(t)
	documented := map[string]int{}
	for _, r := range rows {
		for _, k := range r.keys {
			if prev, dup := documented[k]; dup {
				t.Errorf("%s:%d: %s already has a row (line %d)", configDoc, r.line, k, prev)
			}
			documented[k] = r.line
		}
	}
	example := readRepoFile(t, "config.yml.example")
	// storage.redirect lives inside distribution's storage section (a
	// map decoded by hand), not in a struct field of its own.
	known := map[string]bool{"storage.redirect": true}
	for _, k := range yamlKeys() {
		known[k.path] = true
		if k.typ.Kind() == reflect.Struct {
			continue // a section: its keys have rows
		}
		if _, ok := documented[k.path]; !ok {
			t.Errorf("%s does not document the key %s", configDoc, k.path)
		}
		leaf := k.path[strings.LastIndex(k.path, ".")+1:]
		if !regexp.MustCompile(`(?m)^[ \t]*(#[ \t]*)?(- )?` + regexp.QuoteMeta(leaf) + `:`).MatchString(example) {
			t.Errorf("config.yml.example does not document the key %s", k.path)
		}
	}
	for k, line := range documented {
		if !known[k] {
			t.Errorf("%s:%d: %s is not a key of the configuration file", configDoc, line, k)
		}
	}

	// The keys config.yml.example sets (uncommented) are all documented.
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(example), &root); err != nil {
		t.Fatalf("config.yml.example: %v", err)
	}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if prefix != "" {
					p = prefix + "." + p
				}
				if _, ok := documented[p]; !ok && n.Content[i+1].Kind != yaml.MappingNode {
					t.Errorf("config.yml.example sets %s, which %s does not document", p, configDoc)
				}
				if p != "storage" {
					walk(n.Content[i+1], p)
				}
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				if c.Kind == yaml.MappingNode {
					walk(c, prefix+"[]")
				}
			}
		}
	}
	walk(&root, "")
}

// TestConfigDocCoversEveryVariable: every environment variable the binary
// reads is documented, on the row of the key it sets, and every variable
// the document names is read.
func TestConfigDocCoversEveryVariable(t *testing.T) {
	t.Parallel()
	rows := docRows(t)
	env := binaryEnv(t)
	rowOf := map[string]docRow{}
	seen := map[string]bool{}
	for _, r := range rows {
		for _, k := range r.keys {
			rowOf[k] = r
		}
		for _, e := range r.env {
			seen[e] = true
			if _, ok := env[e]; !ok {
				t.Errorf("%s:%d: %s is not a variable the binary reads", configDoc, r.line, e)
			}
		}
	}
	for _, name := range sortedKeys(env) {
		if !seen[name] {
			t.Errorf("%s does not document the variable %s", configDoc, name)
			continue
		}
		if p := env[name]; p != "" {
			if r, ok := rowOf[p]; !ok || !contains(r.env, name) {
				t.Errorf("%s: the row of %s does not name %s, which sets it", configDoc, p, name)
			}
		}
	}
}

// TestConfigDocCoversEveryFlag: every flag of the server is documented on
// the row of the key it sets, and every flag the document names exists.
func TestConfigDocCoversEveryFlag(t *testing.T) {
	t.Parallel()
	rows := docRows(t)
	usage := config.Usage()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)`).FindAllStringSubmatch(usage, -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("config.Usage() lists only %d flags", len(flags))
	}
	rowOf := map[string]docRow{}
	seen := map[string]bool{}
	for _, r := range rows {
		for _, k := range r.keys {
			rowOf[k] = r
		}
		for _, f := range r.flags {
			seen[f] = true
			if !flags[f] {
				t.Errorf("%s:%d: %s is not a flag of container-registry-proxy (config.Usage)", configDoc, r.line, f)
			}
		}
	}
	for f := range flags {
		if !seen[f] {
			t.Errorf("%s does not document the flag %s", configDoc, f)
		}
	}
	for f, p := range flagPaths(t) {
		if r, ok := rowOf[p]; !ok || !contains(r.flags, f) {
			t.Errorf("%s: the row of %s does not name %s, which sets it", configDoc, p, f)
		}
	}
}

// TestConfigDocDefaults: the default column agrees with config.Default()
// for booleans, durations, sizes, numbers and non-empty strings.
func TestConfigDocDefaults(t *testing.T) {
	t.Parallel()
	rows := docRows(t)
	keys := map[string]yamlKey{}
	for _, k := range yamlKeys() {
		keys[k.path] = k
	}
	durType := reflect.TypeOf(config.Duration(0))
	sizeType := reflect.TypeOf(config.Size(0))
	for _, r := range rows {
		if len(r.keys) != 1 {
			continue
		}
		k, ok := keys[r.keys[0]]
		if !ok {
			continue // reported by TestConfigDocCoversEveryKey
		}
		spans := codeSpans(r.deflt)
		got := ""
		if len(spans) > 0 {
			got = spans[0]
		}
		var want string
		var same func(string) bool
		switch {
		case k.typ == durType:
			want = config.Duration(k.value.Int()).String()
			same = func(s string) bool { d, err := config.ParseDuration(s); return err == nil && int64(d) == k.value.Int() }
		case k.typ == sizeType:
			want = config.Size(k.value.Int()).String()
			same = func(s string) bool { n, err := config.ParseSize(s); return err == nil && n == k.value.Int() }
		case k.typ.Kind() == reflect.Bool:
			want = strconv.FormatBool(k.value.Bool())
			same = func(s string) bool { return s == want }
		case k.typ.Kind() == reflect.String:
			want = k.value.String()
			same = func(s string) bool { return s == want }
		case k.typ.Kind() == reflect.Int:
			want = strconv.FormatInt(k.value.Int(), 10)
			same = func(s string) bool { return s == want }
		case k.typ.Kind() == reflect.Slice && k.typ.Elem().Kind() == reflect.Int:
			want = strings.ReplaceAll(fmt.Sprint(k.value.Interface()), " ", ", ")
			same = func(s string) bool { return strings.ReplaceAll(s, " ", "") == strings.ReplaceAll(want, " ", "") }
		default:
			continue
		}
		if k.value.IsZero() && k.typ.Kind() != reflect.Bool {
			continue // derived or empty: described in words
		}
		if !same(got) {
			t.Errorf("%s:%d: %s: default %q, but config.Default() has `%s`", configDoc, r.line, r.keys[0], r.deflt, want)
		}
	}
}
