// Package config owns the proxy's configuration: the Config struct and its
// defaults, the optional YAML file, the environment variables inherited from
// the nginx-based docker-registry-proxy (REGISTRIES, MANIFEST_CACHE_*,
// CACHE_MAX_SIZE, ...), the command-line flags, and validation.
//
// Load applies the sources in increasing precedence: defaults, YAML file,
// environment, flags. Every error it returns is one line that names the key
// as the user wrote it (a flag, an environment variable or a YAML path such
// as registries[1].endpoint) and the offending value; see KeyError.
//
// Durations and sizes use nginx syntax ("10m", "60d", "1h30m"; "32g",
// "512k"), see ParseDuration and ParseSize.
//
// The package imports no other package of the project and no storage
// driver: Storage is passed through in distribution's configuration shape,
// and the caller registers the drivers it supports.
package config
