// Package shim is the proxy's front door for clients that are given
// HTTPS_PROXY instead of a mirror configuration (Docker daemons, Kubernetes
// nodes, CI runners). It owns:
//
//   - the decision per CONNECT, on the target in one spelling
//     (ParseTarget): intercept the configured registries and Docker Hub,
//     by name or by one of their addresses, tunnel other hosts, deny
//     loopback, link-local and metadata addresses;
//   - the certificate authority (CA, LoadOrCreateCA), kept in the CA
//     directory and created there once, and the leaf certificates minted
//     from it on demand, cached per host (Minter);
//   - TLS termination and the rewriting of intercepted requests into
//     namespaced mirror requests, handed to the mirror's http.Handler
//     in-process, and push passthrough to each registry's endpoint over
//     a transport that verifies it;
//   - the client setup endpoints GET /ca.crt and GET /setup/... (SetupHandler):
//     the systemd drop-in script, containerd hosts.toml files and
//     containers' registries.conf, all pointing at the address the request
//     came in on.
//
// The Shim serves CONNECT and absolute-form requests only (Handles); the
// front handler in cmd sends every other request to its own routes. See
// docs/architecture.md for how it sits in front of the mirror.
//
// shim never imports mirror, storage, config or cmd: it receives the mirror
// as an http.Handler, its settings as data (Options, Registry) and the
// rest as small interfaces defined here (ProxyAuthenticator,
// Purger, Observer).
package shim
