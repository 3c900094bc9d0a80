// Package testreg runs real upstream registries (distribution v3,
// in-process, filesystem storage in a temp dir) on loopback for tests.
//
// Each Registry has a front handler that counts requests by kind, enforces
// Basic or Bearer token auth (with its own token server), injects faults
// switchable at runtime, and can redirect blob GETs to a loopback "CDN".
// With TLS, every listener uses a certificate from a CA made for that
// Registry. The Push helpers create real, unpackable images through the
// registry API on an internal listener that bypasses auth, faults and counts.
package testreg
