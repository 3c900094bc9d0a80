package s3uploads_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage/s3uploads"
	"go.uber.org/goleak"
)

// s3Server is the versitygw the tests share, a bucket each.
var s3Server testutil.SharedS3

// TestMain stops the shared S3 server after the tests, then checks that
// none left a goroutine behind (PurgeEvery's loop ends with its context).
func TestMain(m *testing.M) { goleak.VerifyTestMain(s3Server.StopAfter(m)) }

// partSize is S3's smallest part, the driver's part size in these tests.
const partSize = 5 << 20

// params returns the s3 driver's parameters for root in srv's bucket.
func params(srv *testutil.S3Server, root string) map[string]any {
	p := srv.DriverParams(root)
	p["chunksize"] = partSize
	return p
}

// crash starts an upload of size bytes to p through the driver's Writer,
// as a fill does, and leaves it as a process killed in the middle would:
// neither committed nor cancelled. A part goes up when size exceeds a
// part.
func crash(t *testing.T, p map[string]any, path string, size int) {
	t.Helper()
	d, err := factory.Create(t.Context(), "s3", p)
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Writer(t.Context(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	// w is abandoned: no Commit, Cancel or Close.
}

func open(t *testing.T, p map[string]any) *s3uploads.Uploads {
	t.Helper()
	u, err := s3uploads.FromParameters(p)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// keys lists the keys of u's uploads.
func keys(t *testing.T, u *s3uploads.Uploads) []string {
	t.Helper()
	ups, err := u.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, up := range ups {
		if up.ID == "" || up.Initiated.IsZero() {
			t.Errorf("upload %+v: no ID or no initiation time", up)
		}
		out = append(out, up.Key)
	}
	return out
}

// TestPurge: uploads that writers killed mid-upload left are listed under
// the driver's root directory only; Purge keeps those younger than its
// age and aborts the others, which are then gone; another root directory
// of the bucket is never touched.
func TestPurge(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := s3Server.Get(t)
	crash(t, params(srv, "/cache"), "/_uploads/1/data", partSize+1)
	crash(t, params(srv, "/cache-other"), "/_uploads/2/data", 1)
	cache, other := open(t, params(srv, "/cache")), open(t, params(srv, "/cache-other"))
	for _, tc := range []struct {
		root string
		want []string
	}{
		{"/cache", []string{"cache/_uploads/1/data"}},
		{"/cache/", []string{"cache/_uploads/1/data"}},
		{"cache", []string{"cache/_uploads/1/data"}},
		{"/cache-other", []string{"cache-other/_uploads/2/data"}},
		{"", []string{"cache-other/_uploads/2/data", "cache/_uploads/1/data"}},
	} {
		got := keys(t, open(t, params(srv, tc.root)))
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("root %q lists %v, want %v", tc.root, got, tc.want)
		}
	}
	if n, err := cache.Purge(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("Purge of uploads younger than an hour = %d, %v; want 0 (kept)", n, err)
	}
	if got := keys(t, cache); len(got) != 1 {
		t.Fatalf("after a Purge that keeps it: %v", got)
	}
	if n, err := cache.Purge(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Purge(0) = %d, %v; want 1 aborted", n, err)
	}
	if got := keys(t, cache); len(got) != 0 {
		t.Fatalf("aborted uploads still listed: %v", got)
	}
	if got := keys(t, other); !slices.Equal(got, []string{"cache-other/_uploads/2/data"}) {
		t.Fatalf("another root directory's uploads: %v", got)
	}
	if n, err := cache.Purge(ctx, 0); err != nil || n != 0 {
		t.Fatalf("Purge with nothing left = %d, %v", n, err)
	}
}

// TestPurgeEvery: the first purge runs at once and is reported; the loop
// ends with its context.
func TestPurgeEvery(t *testing.T) {
	t.Parallel()
	srv := s3Server.Get(t)
	p := params(srv, "/cache")
	crash(t, p, "/_uploads/1/data", 1)
	crash(t, p, "/blobs/sha256/ab/abcd/data", 1) // as a multipart copy into place cut short leaves
	ctx, cancel := context.WithCancel(t.Context())
	type run struct {
		n   int
		err error
	}
	runs := make(chan run, 1)
	done := make(chan struct{})
	u := open(t, p)
	go func() {
		defer close(done)
		u.PurgeEvery(ctx, 0, time.Hour, func(n int, err error) { runs <- run{n, err} })
	}()
	if r := <-runs; r.n != 2 || r.err != nil {
		t.Fatalf("first purge: %d, %v; want 2 aborted", r.n, r.err)
	}
	cancel()
	<-done
	if got := keys(t, u); len(got) != 0 {
		t.Fatalf("uploads left: %v", got)
	}
}

// TestFromParameters: the driver's parameters are read as the driver
// reads them, and what cannot work is refused with the parameter's name.
func TestFromParameters(t *testing.T) {
	t.Parallel()
	ok := map[string]any{"bucket": "b", "region": "eu-west-1", "secure": "false", "forcepathstyle": true,
		"regionendpoint": "http://127.0.0.1:1", "accesskey": "a", "secretkey": "s", "rootdirectory": "/r"}
	if _, err := s3uploads.FromParameters(ok); err != nil {
		t.Fatalf("valid parameters: %v", err)
	}
	with := func(k string, v any) map[string]any {
		p := map[string]any{}
		for key, val := range ok {
			p[key] = val
		}
		if v == nil {
			delete(p, k)
		} else {
			p[k] = v
		}
		return p
	}
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{with("bucket", nil), "bucket"},
		{with("bucket", ""), "bucket"},
		{with("v4auth", false), "v4auth"},
		{with("secure", "maybe"), "secure"},
		{with("forcepathstyle", 3), "forcepathstyle"},
	} {
		if _, err := s3uploads.FromParameters(tc.params); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromParameters(%v) = %v; want an error naming %s", tc.params, err, tc.want)
		}
	}
}
