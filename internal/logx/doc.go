// Package logx carries a request-scoped logrus entry and the request's
// cache facts (upstream, repository, reference, cache status) in the
// context, and writes the one access line per request.
package logx
