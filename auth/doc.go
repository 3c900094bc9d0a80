// Package auth owns who the proxy is to each upstream registry and who a
// client is to the proxy.
//
// Towards upstream: the credentials configured for each host (Credentials,
// and the Keychain that holds them: fixed entries, password files re-read
// when they change, a Docker config.json with its credential helpers;
// SwapSource lets a reload replace it), the parsing of WWW-Authenticate
// challenges (ParseChallenges), the Bearer token flow with a token cache
// shared by all requests (TokenCache), the realms that may receive a
// registry's credentials (RealmAllowed), and the http.RoundTripper that
// answers challenges and attaches credentials only to the registry's own
// host (Transport), so redirects to blob storage never carry them. A
// request's context may carry a client's own credentials instead
// (WithCredentials, WithAuthorization).
//
// Towards clients: the proxy's users (Htpasswd) and the access policy of
// each registry's cached content (Policy; Guard holds the one in force).
//
// Work that concurrent requests share — a token request, a credential
// helper run, an upstream access check — runs once, on its own context
// bounded by a timeout: the request that started it may hang up without
// failing the others, and each request waits only as long as its own
// context lets it.
//
// Tokens and passwords are never logged or put into error messages.
package auth
