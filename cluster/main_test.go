package cluster_test

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: Redis watchers,
// index loops, lease keepers, members and fills all end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }
