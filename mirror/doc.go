// Package mirror is the registry that clients see: a pull-through mirror of
// the OCI distribution pull API for many upstream registries at once. It
// routes /v2/ requests to an upstream and repository, caches manifests by
// digest and by tag (with the original project's TTL tiers, revalidation by
// HEAD and stale answers when upstream fails), fills blobs from upstream
// once per digest while streaming them to every waiting client, and turns
// every error into an OCI error envelope.
package mirror
