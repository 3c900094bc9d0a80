// Package logx carries a request-scoped logrus entry and the request's
// cache facts (upstream, repository, reference, cache status) in the
// context, and writes the one access line per request. Query values that
// may be credentials (signed URLs, tokens, upload state) never reach a
// log line: see RedactURI.
package logx
