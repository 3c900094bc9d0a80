package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestLogTransport(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name    string
		level   logrus.Level
		url     string
		wantLog bool
		status  any
	}{
		{name: "debug line without query", level: logrus.DebugLevel, url: srv.URL + "/blob/data?X-Amz-Signature=topsecret&sig=s3cr3t", wantLog: true, status: 418},
		{name: "failure logged with error", level: logrus.DebugLevel, url: "http://127.0.0.1:1/x?sig=s3cr3t", wantLog: true},
		{name: "silent above debug", level: logrus.InfoLevel, url: srv.URL + "/x", wantLog: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, hook := test.NewNullLogger()
			logger.SetLevel(tt.level)
			entry := logrus.NewEntry(logger)
			lt := &logTransport{base: http.DefaultTransport, upstream: "registry.test", log: func(context.Context) *logrus.Entry { return entry }}
			req, _ := http.NewRequest("GET", tt.url, nil)
			req.Header.Set("Authorization", "Bearer tokensecret")
			resp, err := lt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			entries := hook.AllEntries()
			if !tt.wantLog {
				if len(entries) != 0 {
					t.Fatalf("unexpected log lines: %d", len(entries))
				}
				return
			}
			if len(entries) != 1 {
				t.Fatalf("log lines = %d, want 1", len(entries))
			}
			e := entries[0]
			if e.Level != logrus.DebugLevel || e.Data["method"] != "GET" || e.Data["upstream"] != "registry.test" || e.Data["path"] != req.URL.Path {
				t.Errorf("fields = %v", e.Data)
			}
			if _, ok := e.Data["dur_ms"]; !ok {
				t.Errorf("no dur_ms in %v", e.Data)
			}
			if tt.status != nil && e.Data["status"] != tt.status {
				t.Errorf("status = %v", e.Data["status"])
			}
			if tt.status == nil && e.Data["error"] == nil {
				t.Errorf("no error field in %v", e.Data)
			}
			line := fmt.Sprint(e.Message, e.Data)
			for _, secret := range []string{"topsecret", "s3cr3t", "tokensecret", "?"} {
				if strings.Contains(line, secret) {
					t.Errorf("log line leaks %q: %s", secret, line)
				}
			}
		})
	}
}
