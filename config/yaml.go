package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// nonDriverStorageKeys are keys of distribution's storage section that are
// not drivers; they are accepted and dropped.
var nonDriverStorageKeys = map[string]bool{"cache": true, "maintenance": true, "redirect": true, "delete": true}

var storageType = reflect.TypeOf(map[string]map[string]any(nil))

// decodeYAML reads one YAML document from data into c, over the values
// already there. It is as strict as yaml.v3's KnownFields(true) (unknown
// and repeated keys are errors) but walks the node tree itself so that
// every error is a KeyError naming the full path (registries[1].endpoint)
// and the file's line.
func decodeYAML(c *Config, data []byte, file string) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: nothing to apply
		}
		return &KeyError{Key: file, Err: noValue(oneLine(err))}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &KeyError{Key: file, Err: noValue(errors.New("want exactly one YAML document"))}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	d := yamlDecoder{file: file, cfg: c}
	return d.decode(doc.Content[0], reflect.ValueOf(c).Elem(), "")
}

type yamlDecoder struct {
	file string
	cfg  *Config
}

func (d *yamlDecoder) errorAt(n *yaml.Node, path string, err error) error {
	err = fmt.Errorf("%w (%s:%d)", err, d.file, n.Line)
	if n.Kind != yaml.ScalarNode {
		return &KeyError{Key: path, Err: noValue(err)}
	}
	return &KeyError{Key: path, Value: n.Value, Err: err}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode stores node n into v; path is n's YAML path for messages.
func (d *yamlDecoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "key:" with no value keeps the default
	}
	switch {
	case v.Type() == storageType:
		return d.decodeStorage(n, v, path)
	case v.Kind() == reflect.Struct:
		return d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			return d.errorAt(n, path, errors.New("expected a list"))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case v.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			return d.errorAt(n, path, errors.New("expected true or false"))
		}
		b, err := parseBool(n.Value)
		if err != nil {
			return d.errorAt(n, path, err)
		}
		v.SetBool(b)
	case v.Kind() == reflect.String && n.Kind != yaml.ScalarNode:
		return d.errorAt(n, path, errors.New("expected a string"))
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return d.errorAt(n, path, oneLine(err))
		}
	}
	d.cfg.setSource(path, path)
	return nil
}

func (d *yamlDecoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorAt(n, path, errors.New("expected a mapping"))
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag := yamlName(t.Field(i)); tag != "" {
			fields[tag] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			return &KeyError{Key: p, Err: noValue(fmt.Errorf("%w (%s:%d)", ErrUnknownKey, d.file, k.Line))}
		}
		if seen[k.Value] {
			return &KeyError{Key: p, Err: noValue(fmt.Errorf("key repeated (%s:%d)", d.file, k.Line))}
		}
		seen[k.Value] = true
		if err := d.decode(val, v.Field(idx), p); err != nil {
			return err
		}
	}
	return nil
}

// decodeStorage reads distribution's storage section: driver name →
// parameters, dropping the non-driver keys.
func (d *yamlDecoder) decodeStorage(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorAt(n, path, errors.New("expected a mapping from one driver name to its parameters"))
	}
	out := map[string]map[string]any{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if k.Value == "redirect" {
			if err := d.decodeRedirect(val, p); err != nil {
				return err
			}
			continue
		}
		if nonDriverStorageKeys[k.Value] {
			continue
		}
		if _, dup := out[k.Value]; dup {
			return &KeyError{Key: p, Err: noValue(fmt.Errorf("key repeated (%s:%d)", d.file, k.Line))}
		}
		params := map[string]any{}
		for val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		switch {
		case val.Kind == yaml.ScalarNode && (val.Tag == "!!null" || val.Value == ""):
		case val.Kind == yaml.MappingNode:
			if err := val.Decode(&params); err != nil {
				return d.errorAt(val, p, oneLine(err))
			}
		default:
			return d.errorAt(val, p, errors.New("expected a mapping of driver parameters"))
		}
		out[k.Value] = params
	}
	v.Set(reflect.ValueOf(out))
	d.cfg.setSource(path, path)
	return nil
}

// decodeRedirect reads storage.redirect: true or false, or distribution's
// mapping {disable: bool} (its default, redirects on, is not ours: only
// an explicit true turns them on).
func (d *yamlDecoder) decodeRedirect(n *yaml.Node, path string) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" || n.Value == "" {
			return nil
		}
		b, err := parseBool(n.Value)
		if err != nil {
			return d.errorAt(n, path, err)
		}
		d.cfg.StorageRedirect = b
	case yaml.MappingNode:
		var m struct {
			Disable *bool `yaml:"disable"`
		}
		if err := n.Decode(&m); err != nil {
			return d.errorAt(n, path, oneLine(err))
		}
		if m.Disable != nil {
			d.cfg.StorageRedirect = !*m.Disable
		}
	default:
		return d.errorAt(n, path, errors.New("expected true or false"))
	}
	d.cfg.setSource(path, path)
	return nil
}

// yamlName is the YAML key of a struct field, "" when it has none.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || name == "" {
		return ""
	}
	return name
}

// oneLine flattens yaml.v3's multi-line errors.
func oneLine(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	var ve *ValueError
	if errors.As(err, &ve) {
		return err
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

// parseBool reads the booleans the original project's variables accepted:
// true/false, 1/0, yes/no, on/off, in any case.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, &ValueError{Kind: "boolean", Value: s, Reason: "want true/false, 1/0, yes/no or on/off"}
}
