package netguard

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them (the
// loopback servers of the dial tests).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
