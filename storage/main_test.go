package storage

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// s3Server is the one versitygw the tests of this package share (each
// test gets a bucket of its own).
var s3Server testutil.SharedS3

// TestMain checks that no test leaves a goroutine behind: upload
// followers, index flushers and eviction loops all end. The shared S3
// server is stopped first, which ends the S3 clients' connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(s3Server.StopAfter(m)) }
