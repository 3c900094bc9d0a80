package upstream

import (
	"context"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// logTransport writes one debug line per request sent upstream (each
// redirect hop and token request included) with the method, host, path,
// status and duration. Query strings are never logged — the signed URLs
// blob storage redirects to carry secrets there — and neither are headers.
type logTransport struct {
	base     http.RoundTripper
	upstream string
	log      func(context.Context) *logrus.Entry
}

// RoundTrip implements http.RoundTripper.
func (t *logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	entry := t.log(req.Context())
	if entry == nil || !entry.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return t.base.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	fields := logrus.Fields{
		"upstream": t.upstream,
		"method":   req.Method,
		"scheme":   req.URL.Scheme,
		"host":     req.URL.Host,
		"path":     req.URL.Path,
		"dur_ms":   time.Since(start).Milliseconds(),
	}
	if err != nil {
		fields["error"] = err.Error()
	} else {
		fields["status"] = resp.StatusCode
	}
	entry.WithFields(fields).Debug("upstream request")
	return resp, err
}
