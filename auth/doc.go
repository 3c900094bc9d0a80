// Package auth owns who the proxy is to each upstream registry and who a
// client is to the proxy.
//
// Towards upstream: the credentials configured for each host (Credentials,
// and the Keychain that holds them: fixed entries, password files re-read
// when they change, a Docker config.json with its credential helpers), the
// parsing of WWW-Authenticate challenges (ParseChallenges), the Bearer
// token flow with a token cache shared by all requests (TokenCache), and
// the http.RoundTripper that answers challenges and attaches credentials
// only to the registry's own host (Transport), so redirects to blob
// storage never carry them. A request's context may carry a client's own
// credentials instead (WithCredentials, WithAuthorization).
//
// Towards clients: the proxy's users (Htpasswd) and the access policy of
// each registry's cached content (Policy).
//
// Tokens and passwords are never logged or put into error messages.
package auth
