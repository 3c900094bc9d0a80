package config

import (
	"os"
	"reflect"
	"regexp"
	"testing"
)

const exampleFile = "../config.yml.example"

// TestExampleLoads loads config.yml.example: its uncommented values are the
// defaults, so the result equals loading no file at all.
func TestExampleLoads(t *testing.T) {
	t.Parallel()
	withFile, err := Load([]string{"--config", exampleFile}, envMap(nil))
	if err != nil {
		t.Fatalf("loading %s: %v", exampleFile, err)
	}
	without, err := Load(nil, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	withFile.src, without.src = nil, nil // where values came from differs
	if !reflect.DeepEqual(withFile, without) {
		t.Errorf("%s does not load as the defaults:\n got %+v\nwant %+v", exampleFile, withFile, without)
	}
}

// TestExampleDocumentsEveryKey walks the Config struct tree and requires
// each YAML key to appear in config.yml.example as a key (commented out or
// not).
func TestExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			p := join(path, name)
			t.Run(p, func(t *testing.T) {
				t.Parallel()
				re := regexp.MustCompile(`(?m)^[ \t]*(#[ \t]*)?(- )?` + regexp.QuoteMeta(name) + `:`)
				if !re.Match(data) {
					t.Errorf("%s does not document the key %s", exampleFile, p)
				}
			})
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}
