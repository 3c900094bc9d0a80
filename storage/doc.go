// Package storage owns the cache's persistent state on a distribution v3
// storage driver: content-addressed blobs (layers, configs and manifests
// alike) that are committed only after their size and digest were
// verified, repository links that record which repository was seen to
// contain which blob, tag records and the last tag lists. Every piece of
// state lives on the driver, so several processes can later share one
// bucket; nothing here is owned by a single process. The layout is
// documented in layout.go.
package storage
