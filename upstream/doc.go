// Package upstream talks to upstream registries. A Registry holds the
// endpoint, TLS settings and credentials of one upstream and a stack of
// small http.RoundTrippers — auth (challenges, tokens) → retry (GET/HEAD on
// connection errors and 502/503/504, unless a Retry-After asks for longer) → logging → an http.Transport with
// connect, header and idle-read timeouts — and fetches manifests and blobs
// through it. Credentials come from the request's context (a client's own,
// auth.WithCredentials / auth.WithAuthorization), else a shared
// auth.Keychain, else the static Options.Credentials; CheckAccess asks
// upstream whether a client's own credentials may read a repository.
// Every error it returns is, or wraps, an *oci.Error carrying
// the status and code a client should see.
package upstream
