package auth

import "context"

// ctxKey is the type of this package's context keys.
type ctxKey int

const (
	credentialsKey ctxKey = iota
	authorizationKey
)

// WithCredentials returns a context whose upstream requests (through a
// Transport) use c instead of the keychain and the static credentials:
// for Basic challenges and at the token realm. The zero Credentials mean
// "anonymous for this request" — the keychain is not consulted. The
// proxy uses it to check a client's own credentials against upstream and
// to pass them through (ALLOW_OWN_AUTH). Tokens obtained this way are
// cached under c's identity only.
func WithCredentials(ctx context.Context, c Credentials) context.Context {
	return context.WithValue(ctx, credentialsKey, c)
}

// WithAuthorization returns a context whose upstream requests carry the
// Authorization header value h unchanged (a client's own Bearer token or
// Basic header) and are not answered by the Transport when challenged:
// the 401 goes back to the caller. It takes precedence over
// WithCredentials. An empty h is ignored.
func WithAuthorization(ctx context.Context, h string) context.Context {
	if h == "" {
		return ctx
	}
	return context.WithValue(ctx, authorizationKey, h)
}

// credentialsFrom returns the credentials set by WithCredentials.
func credentialsFrom(ctx context.Context) (Credentials, bool) {
	c, ok := ctx.Value(credentialsKey).(Credentials)
	return c, ok
}

// authorizationFrom returns the header value set by WithAuthorization.
func authorizationFrom(ctx context.Context) string {
	h, _ := ctx.Value(authorizationKey).(string)
	return h
}

// HasOverride reports whether ctx carries per-request credentials
// (WithCredentials or WithAuthorization).
func HasOverride(ctx context.Context) bool {
	if authorizationFrom(ctx) != "" {
		return true
	}
	_, ok := credentialsFrom(ctx)
	return ok
}
