// Package auth owns who the proxy is to each upstream registry: the
// credentials configured for it (Credentials), the parsing of
// WWW-Authenticate challenges (ParseChallenges), the Bearer token flow with
// a token cache shared by all requests (TokenCache), and the
// http.RoundTripper that answers challenges and attaches credentials only
// to the registry's own host (Transport), so redirects to blob storage
// never carry them. Tokens and passwords are never logged or put into
// error messages.
package auth
