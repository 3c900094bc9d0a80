// Package status renders the proxy's status page at GET / for browsers:
// hit ratio, bytes saved, per-upstream traffic and rate-limit headroom,
// fills in flight, cache usage, the most pulled repositories and client
// setup snippets with the proxy's real address. It is plain
// server-rendered HTML with embedded styles: no script, no outside request.
package status
