// Package cluster is what several replicas of the proxy share through
// Redis (docs/architecture.md, "Cluster"; docs/scaling.md): the connection
// and its degraded mode (Redis), the cache index (Index, a storage.Index),
// the members and who owns which digest (Members, rendezvous hashing),
// leases (Lease), and the fill coordinator (Fetcher, a mirror.Fetcher)
// that fetches a blob from upstream on one replica and streams it to the
// others while it arrives.
package cluster
