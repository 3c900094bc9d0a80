package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// storageDrivers are the storage driver names Validate accepts; the caller
// registers (imports) the drivers themselves.
var storageDrivers = []string{"filesystem", "inmemory", "s3", "gcs", "azure"}

// StorageDriver returns the configured driver's name and parameters, for
// distribution's factory.Create. Call it after Validate.
func (c *Config) StorageDriver() (string, map[string]any) {
	for name, params := range c.Storage {
		if !nonDriverStorageKeys[name] {
			return name, params
		}
	}
	return "", nil
}

// StorageDriverName returns the configured driver's name.
func (c *Config) StorageDriverName() string {
	name, _ := c.StorageDriver()
	return name
}

func (c *Config) validateStorage() error {
	key := c.keyFor("storage")
	if c.Storage == nil {
		if c.CacheDir == "" {
			return &KeyError{Key: c.keyFor("cacheDir"), Err: errors.New("must not be empty")}
		}
		c.Storage = map[string]map[string]any{"filesystem": {"rootdirectory": c.CacheDir}}
		return nil
	}
	for k := range nonDriverStorageKeys {
		delete(c.Storage, k)
	}
	names := make([]string, 0, len(c.Storage))
	for name := range c.Storage {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return &KeyError{Key: key, Err: noValue(fmt.Errorf("no driver; want one of %s", strings.Join(storageDrivers, ", ")))}
	}
	if len(names) != 1 {
		return &KeyError{Key: key, Value: strings.Join(names, ", "),
			Err: fmt.Errorf("want exactly one driver of %s", strings.Join(storageDrivers, ", "))}
	}
	name := names[0]
	known := false
	for _, d := range storageDrivers {
		known = known || d == name
	}
	if !known {
		return &KeyError{Key: key, Value: name, Err: fmt.Errorf("unknown driver; want one of %s", strings.Join(storageDrivers, ", "))}
	}
	if name != "filesystem" {
		return nil
	}
	params := c.Storage[name]
	if params == nil {
		params = map[string]any{}
		c.Storage[name] = params
	}
	root, ok := params["rootdirectory"]
	if !ok || root == nil {
		if c.CacheDir == "" {
			return &KeyError{Key: c.keyFor("cacheDir"), Err: errors.New("must not be empty")}
		}
		params["rootdirectory"] = c.CacheDir
		return nil
	}
	if s, ok := root.(string); !ok || s == "" {
		return &KeyError{Key: key + ".filesystem.rootdirectory", Value: fmt.Sprint(root), Err: errors.New("want a directory path")}
	}
	return nil
}
