package harness

import "fmt"

// proxyConfig is the proxy's YAML configuration with one registry; the
// last verb takes what follows its endpoint line.
const proxyConfig = `listen: "127.0.0.1:%d"
cacheDir: %q
caDir: %q
dockerHub: false
logFormat: text
registries:
  - host: %q
    endpoint: %q
%s`

// ProxyConfig returns the proxy's configuration: listening on
// 127.0.0.1:port, its cache in cacheDir and its CA in caDir, Docker Hub
// off, text logs, and one registry, host at endpoint. extra is YAML
// appended after the endpoint line: more keys of the registry's entry,
// indented four spaces ("    insecure: true\n"), then top-level keys
// (storage, redis, cluster). Everything else keeps the proxy's defaults,
// as shipped (the manifest cache off), for both programs to measure.
func ProxyConfig(port int, cacheDir, caDir, host, endpoint, extra string) string {
	return fmt.Sprintf(proxyConfig, port, cacheDir, caDir, host, endpoint, extra)
}
