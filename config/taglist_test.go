package config

import "testing"

// TestTagListSettings: the tag list bounds default to 16m and 100000, are
// set by the YAML file or the environment (which wins), and a bound that
// is not positive stops the start with one line naming the key.
func TestTagListSettings(t *testing.T) {
	t.Parallel()
	c, err := Load(nil, envMap(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if c.TagList.MaxBytes != 16<<20 || c.TagList.MaxTags != 100000 {
		t.Fatalf("defaults %+v", c.TagList)
	}
	file := writeFile(t, "c.yml", "tagList:\n  maxBytes: 1m\n  maxTags: 500\n")
	if c, err = Load(nil, envMap(map[string]string{"CONFIG_FILE": file})); err != nil {
		t.Fatal(err)
	}
	if c.TagList.MaxBytes != 1<<20 || c.TagList.MaxTags != 500 {
		t.Fatalf("from the file: %+v", c.TagList)
	}
	if c, err = Load(nil, envMap(map[string]string{"CONFIG_FILE": file, "TAG_LIST_MAX_BYTES": "64m", "TAG_LIST_MAX_TAGS": "250000"})); err != nil {
		t.Fatal(err)
	}
	if c.TagList.MaxBytes != 64<<20 || c.TagList.MaxTags != 250000 {
		t.Fatalf("from the environment: %+v", c.TagList)
	}
	for _, tc := range []struct {
		env       map[string]string
		yaml      string
		key, want string
	}{
		{yaml: "tagList:\n  maxBytes: 0\n", key: "tagList.maxBytes", want: `tagList.maxBytes: invalid value "0": must be positive`},
		{yaml: "tagList:\n  maxTags: -1\n", key: "tagList.maxTags", want: `tagList.maxTags: invalid value "-1": must be positive`},
		{env: map[string]string{"TAG_LIST_MAX_TAGS": "0"}, key: "TAG_LIST_MAX_TAGS", want: `TAG_LIST_MAX_TAGS: invalid value "0": must be positive`},
		{env: map[string]string{"TAG_LIST_MAX_BYTES": "16mb"}, key: "TAG_LIST_MAX_BYTES"},
	} {
		env := map[string]string{}
		for k, v := range tc.env {
			env[k] = v
		}
		if tc.yaml != "" {
			env["CONFIG_FILE"] = writeFile(t, "c.yml", tc.yaml)
		}
		_, err := Load(nil, envMap(env))
		wantKeyError(t, err, tc.key, tc.want)
	}
}
