// Package storage owns the cache's persistent state on a distribution v3
// storage driver: content-addressed blobs (layers, configs and manifests
// alike) that are committed only after their size and digest were
// verified, repository links that record which repository was seen to
// contain which blob, tag records and the last tag lists. Every piece of
// state lives on the driver, so several processes can later share one
// bucket; nothing here is owned by a single process. The layout is
// documented in layout.go.
//
// It also owns the cache's lifecycle: an Index of what is stored (size,
// last access, kind, linking repositories, a manifest's children) that is
// derived data, rebuilt from a walk of the driver when lost (index.go,
// index_bolt.go, index_mem.go, walk.go); the Evictor that keeps the cache
// under its size bound, its free-space floor and its inactive time
// (evict.go); and the engine of the gc and du subcommands (gc.go).
package storage
