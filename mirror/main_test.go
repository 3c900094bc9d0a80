package mirror_test

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"go.uber.org/goleak"
)

// s3Server is the one versitygw the tests of this package with the "s3"
// backend share (each test gets a bucket of its own).
var s3Server testutil.SharedS3

// TestMain checks that no test leaves a goroutine behind: fills, their
// followers and shared lookups all end. The shared S3 server is stopped
// first, which ends the S3 clients' connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(s3Server.StopAfter(m), testutil.LeakOptions()...) }
