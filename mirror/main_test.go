package mirror_test

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: fills, their
// followers and shared lookups all end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }
