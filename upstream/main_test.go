package upstream

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// request that never ends, or a connection left open. The one goroutine
// it lets pass is not ours: distribution's registry App, which
// internal/testreg runs, starts a notification broadcaster that its
// Shutdown does not stop (the App keeps it unexported).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}
