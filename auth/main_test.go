package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// token request, helper run or access check that never ends, or a
// connection left open.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
