// Package metrics owns the proxy's Prometheus metrics: one registry of its
// own (never the global one) with the Go and process collectors and every
// crp_* metric documented in docs/metrics.md, the /metrics handler, and
// the observer methods through which the domain packages report what they
// do. It imports no project package: mirror, upstream and shim each define
// the small observer interface they call, *Metrics implements all of them,
// and cmd wires it in. The status page reads the same registry by metric
// name (the Name* constants).
package metrics
