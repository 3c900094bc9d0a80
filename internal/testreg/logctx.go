package testreg

import (
	"context"
	"io"
	"os"
	"reflect"

	"github.com/sirupsen/logrus"
)

// dcontextPkg is the (internal) package whose context key holds
// distribution's logger.
const dcontextPkg = "github.com/distribution/distribution/v3/internal/dcontext"

// logContext answers distribution's logger lookup with our own logger, so
// its logs can be silenced without touching logrus' standard logger, which
// the code under test may use. distribution offers no exported way to do
// this: the key type is internal, hence the match by reflection.
// TestDistributionLogsSilenced notices if a new version breaks it.
type logContext struct {
	context.Context
	entry *logrus.Entry
}

// Value implements context.Context.
func (c logContext) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.Name() == "loggerKey" && t.PkgPath() == dcontextPkg {
		return c.entry
	}
	return c.Context.Value(key)
}

// newLogEntry discards distribution's logs, or sends them to stderr at
// debug level when TESTREG_DEBUG is set.
func newLogEntry() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	if os.Getenv("TESTREG_DEBUG") != "" {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l).WithField("component", "testreg")
}
