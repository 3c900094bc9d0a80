package logx

import (
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

// ServerLog is the ErrorLog of an http.Server: each line net/http writes
// (TLS handshake errors and reset connections of clients that went away)
// is logged at debug level with prefix. Unlike logrus's WriterLevel it
// starts no goroutine that would outlive the server.
func ServerLog(logger *logrus.Logger, prefix string) *log.Logger {
	return log.New(debugWriter{logger}, prefix, 0)
}

type debugWriter struct{ l *logrus.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.l.Debug(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
