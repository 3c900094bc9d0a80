// Package oci is the vocabulary of the OCI distribution API shared by every
// other package, without any I/O: repository names and references, the
// resolution of a request path to an upstream registry and repository
// (Docker Hub normalisation included), media types, digests and the OCI
// error envelope with its HTTP status.
package oci
