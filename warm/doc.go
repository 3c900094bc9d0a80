// Package warm pulls images through a running container-registry-proxy
// so that the first real pull is a cache hit: the `warm` subcommand without
// its command-line glue.
//
// It owns image references (ParseReference: docker's normalisation, from
// github.com/distribution/reference, with the proxy's canonical hosts),
// platform selection (ParsePlatform: os/arch[/variant] with the aliases and
// default variants containerd folds), the warming itself (a Warmer resolves
// an image's manifests through the proxy's mirror paths
// /v2/<namespace>/<repo>/…, picks the wanted platforms of an index and reads
// every blob to the end, several at once, verifying size and digest while
// it streams, and counts what the proxy already had by its X-Cache header),
// typed errors that keep the proxy's OCI error code, and the output: a
// progress bar per image on a terminal, plain lines otherwise, and a
// summary table. ParseArgs turns the subcommand's own flags into Options.
//
// It talks to the proxy with upstream.Registry (retries, Basic
// credentials answered on the proxy's challenge, errors as *oci.Error) and
// decodes manifests with the image-spec types. It never reads the proxy's
// configuration: the caller passes the proxy's URL and its namespaces.
package warm
