package storage

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: upload
// followers, index flushers and eviction loops all end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
