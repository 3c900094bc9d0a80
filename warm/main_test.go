package warm

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind (a
// blob reader, a connection of the Warmer's or of the test proxy's).
// The one exception is not ours: the in-process distribution registry of
// internal/testreg (handlers.NewApp) starts a notification broadcaster
// that App.Shutdown never stops.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}
