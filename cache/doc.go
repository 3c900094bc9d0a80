// Package cache owns the cache's lifecycle on top of storage: what is
// stored and how big it is (the index), what is in use right now (pins),
// when content was last read (access times, batched), which repositories
// link it, and what goes when the cache is over its bounds (eviction and
// expiry, in the background).
//
// The mirror consumes it through the small Cache interface it defines
// (docs/architecture.md, "Seams"); Lifecycle is the implementation for one
// process over any storage.Index (the embedded bbolt file, or an index
// shared by several replicas).
package cache
