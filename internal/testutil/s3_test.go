package testutil_test

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/service/s3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// TestStartS3: the server answers on loopback with the credentials it was
// given and no others; distribution's s3 driver works on it with
// DriverParams, under the root directory; buckets of NewBucket are
// separate; the server is gone once its test ended.
//
// Not parallel, nor TestSharedS3: they bind loopback ports and check that
// their server's port is closed afterwards, as TestEchoServer does; run
// among the parallel tests, one could take a port that another has just
// freed and checks.
func TestStartS3(t *testing.T) {
	var endpoint string
	t.Run("serves", func(t *testing.T) {
		srv := testutil.StartS3(t)
		endpoint = srv.Endpoint
		if u, err := url.Parse(srv.Endpoint); err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
			t.Fatalf("endpoint %q is not http on 127.0.0.1", srv.Endpoint)
		}
		if srv.Region != "us-east-1" || srv.AccessKey == "" || srv.SecretKey == "" || srv.Bucket == "" {
			t.Fatalf("server %+v", srv)
		}
		d := newDriver(t, srv, "/root")
		roundTrip(t, d)
		if keys := bucketKeys(t, srv); !slices.Equal(keys, []string{"root/a/b"}) {
			t.Fatalf("keys in the bucket: %v; want root/a/b (the root directory)", keys)
		}
		other := srv.NewBucket(t)
		if other.Bucket == srv.Bucket || other.Endpoint != srv.Endpoint {
			t.Fatalf("NewBucket = %+v", other)
		}
		if keys := bucketKeys(t, other); len(keys) != 0 {
			t.Fatalf("a new bucket holds %v", keys)
		}
		wrong := srv.Client()
		wrong.Config.Credentials = credentials.NewStaticCredentials(srv.AccessKey, srv.SecretKey+"x", "")
		_, err := wrong.ListObjectsV2WithContext(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket)})
		var ae awserr.RequestFailure
		if !errors.As(err, &ae) || ae.StatusCode() != 403 {
			t.Fatalf("a wrong secret: %v; want 403", err)
		}
	})
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(endpoint, "http://"), 5*time.Second); err == nil {
		conn.Close()
		t.Errorf("S3 server at %s still accepts after its test ended", endpoint)
	}
}

// TestSharedS3: one server for every caller, a bucket each; StopAfter's
// Run runs the tests and then stops it.
func TestSharedS3(t *testing.T) {
	var sh testutil.SharedS3
	var a *testutil.S3Server
	code := sh.StopAfter(runFunc(func() int {
		var b *testutil.S3Server
		a, b = sh.Get(t), sh.Get(t)
		if a.Endpoint != b.Endpoint || a.Bucket == b.Bucket {
			t.Fatalf("two Gets: %s %s and %s %s; want one server, two buckets", a.Endpoint, a.Bucket, b.Endpoint, b.Bucket)
		}
		roundTrip(t, newDriver(t, b, ""))
		if keys := bucketKeys(t, a); len(keys) != 0 {
			t.Fatalf("the other bucket holds %v", keys)
		}
		return 7
	})).Run()
	if code != 7 {
		t.Fatalf("StopAfter's Run returned %d, want the tests' 7", code)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(a.Endpoint, "http://"), 5*time.Second); err == nil {
		conn.Close()
		t.Errorf("shared S3 server at %s still accepts after Stop", a.Endpoint)
	}
}

// runFunc is a goleak.TestingM that runs a function.
type runFunc func() int

func (f runFunc) Run() int { return f() }

func newDriver(t *testing.T, srv *testutil.S3Server, root string) storagedriver.StorageDriver {
	t.Helper()
	d, err := factory.Create(t.Context(), "s3", srv.DriverParams(root))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// roundTrip writes /a/b through the driver's Writer (a multipart upload),
// reads it back, lists and stats it, and overwrites it with PutContent.
func roundTrip(t *testing.T, d storagedriver.StorageDriver) {
	t.Helper()
	ctx := t.Context()
	w, err := d.Writer(ctx, "/a/b", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("written")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := d.GetContent(ctx, "/a/b"); err != nil || string(b) != "written" {
		t.Fatalf("GetContent = %q, %v", b, err)
	}
	if err := d.PutContent(ctx, "/a/b", []byte("put")); err != nil {
		t.Fatal(err)
	}
	if b, err := d.GetContent(ctx, "/a/b"); err != nil || !bytes.Equal(b, []byte("put")) {
		t.Fatalf("GetContent after PutContent = %q, %v", b, err)
	}
	if names, err := d.List(ctx, "/a"); err != nil || !slices.Equal(names, []string{"/a/b"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	if fi, err := d.Stat(ctx, "/a/b"); err != nil || fi.Size() != 3 || fi.IsDir() {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	var pnf storagedriver.PathNotFoundError
	if _, err := d.Stat(ctx, "/missing"); !errors.As(err, &pnf) {
		t.Fatalf("Stat of a missing path: %v", err)
	}
}

// bucketKeys lists every key of the server's bucket.
func bucketKeys(t *testing.T, srv *testutil.S3Server) []string {
	t.Helper()
	resp, err := srv.Client().ListObjectsV2WithContext(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range resp.Contents {
		keys = append(keys, aws.StringValue(o.Key))
	}
	return keys
}
