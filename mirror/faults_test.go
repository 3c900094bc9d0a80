package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// TestCommitDiskErrorsRelay: a disk error at commit time (the move into
// place fails with ENOSPC, EDQUOT or EROFS) is handled like one at write
// time: every client gets its verified bytes, nothing is kept, and the
// log names the real cause once.
func TestCommitDiskErrorsRelay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		errno syscall.Errno
		cause string
	}{
		{syscall.ENOSPC, "disk full"},
		{syscall.EDQUOT, "disk quota exceeded"},
		{syscall.EROFS, "read-only file system"},
	}
	for _, backend := range []string{"filesystem", "inmemory"} {
		for _, tc := range cases {
			t.Run(backend+"/"+tc.cause, func(t *testing.T) {
				reg := testreg.Start(t, testreg.Options{TLS: true})
				d, size := reg.PushBigBlob(t, "app", 2)
				wrap := func(sd storagedriver.StorageDriver) storagedriver.StorageDriver {
					fd := &testutil.FaultDriver{StorageDriver: sd, Match: "/blobs/"}
					fd.Fail("Move", tc.errno)
					return fd
				}
				e := newEnv(t, envOptions{backend: backend, wrap: wrap}, upstreamSpec{host: "registry.test", reg: reg})
				path := "/v2/registry.test/app/blobs/" + d.String()
				for i := range 2 {
					status, sum, n, err := hashGET(e, path)
					if err != nil || status != 200 || sum != d.String() || n != size {
						t.Fatalf("GET %d: status %d, %d bytes, %s, %v", i, status, n, sum, err)
					}
					e.drain()
				}
				if _, err := e.store.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("the blob was kept: %v", err)
				}
				logs := e.logs.String()
				if n := strings.Count(logs, "cache cannot store blobs"); n != 1 {
					t.Fatalf("%d disk error lines, want one per cause:\n%s", n, logs)
				}
				if !strings.Contains(logs, `cause="`+tc.cause+`"`) {
					t.Fatalf("the log does not name the cause %q:\n%s", tc.cause, logs)
				}
			})
		}
	}
}

// TestUnreadableLinkIsLogged: a repository link that the storage cannot
// stat (EIO) is not taken for "not linked" silently: it is logged with its
// cause, upstream confirms the repository holds the blob, and the hit is
// served.
func TestUnreadableLinkIsLogged(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	b := reg.PushBlob(t, "app", testreg.RandomLayer(t, 10_000))
	fd := &testutil.FaultDriver{Match: "/_links/"}
	wrap := func(sd storagedriver.StorageDriver) storagedriver.StorageDriver { fd.StorageDriver = sd; return fd }
	e := newEnv(t, envOptions{wrap: wrap}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	e.do("GET", path)
	e.drain()
	fd.Fail("Stat", syscall.EIO)
	resp, body := e.do("GET", path)
	if resp.StatusCode != 200 || sha(body) != b.Digest.String() || resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("hit with an unreadable link: %d, X-Cache %q", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	if logs := e.logs.String(); !strings.Contains(logs, "repository link unreadable") || !strings.Contains(logs, "input/output error") {
		t.Fatalf("the unreadable link is not logged with its cause:\n%s", logs)
	}
	if n := served(reg, "HEAD", "blob"); n != 1 {
		t.Fatalf("upstream was asked %d times to confirm the link, want 1", n)
	}
}

// countingDriver counts, per reader it opens, how often it is closed.
type countingDriver struct {
	storagedriver.StorageDriver
	mu     sync.Mutex
	closes []int
}

type countedReader struct {
	io.ReadCloser
	d *countingDriver
	i int
}

func (r *countedReader) Close() error {
	r.d.mu.Lock()
	r.d.closes[r.i]++
	r.d.mu.Unlock()
	return r.ReadCloser.Close()
}

func (d *countingDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	rc, err := d.StorageDriver.Reader(ctx, p, offset)
	if err != nil || !strings.Contains(p, "/blobs/") {
		return rc, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closes = append(d.closes, 0)
	return &countedReader{ReadCloser: rc, d: d, i: len(d.closes) - 1}, nil
}

// TestStoredRangeClosesEachReaderOnce: on a driver whose readers cannot
// seek (inmemory here; S3, GCS, Azure alike), a Range hit opens a second
// reader at the offset; every reader is closed exactly once.
func TestStoredRangeClosesEachReaderOnce(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 100_000)
	b := reg.PushBlob(t, "app", layer)
	cd := &countingDriver{}
	wrap := func(sd storagedriver.StorageDriver) storagedriver.StorageDriver { cd.StorageDriver = sd; return cd }
	e := newEnv(t, envOptions{wrap: wrap}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	e.do("GET", path)
	e.drain()
	for _, rng := range []string{"bytes=1000-1999", "bytes=0-9", "bytes=-5"} {
		resp, _ := e.do("GET", path, "Range", rng)
		if resp.StatusCode != 206 {
			t.Fatalf("%s: %d", rng, resp.StatusCode)
		}
	}
	cd.mu.Lock()
	defer cd.mu.Unlock()
	if len(cd.closes) < 3 {
		t.Fatalf("only %d blob readers were opened", len(cd.closes))
	}
	for i, n := range cd.closes {
		if n != 1 {
			t.Fatalf("blob reader %d was closed %d times, want once (all: %v)", i, n, cd.closes)
		}
	}
}

// TestDrainWhileFillsStart: Drain may run while new fills start (a
// shutdown past its grace period while handlers still run): no data race
// between counting fills and waiting for them (the race detector flagged
// the WaitGroup this replaced), and Drain returns once they all ended.
func TestDrainWhileFillsStart(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	var paths []string
	for i := range 20 {
		b := reg.PushBlob(t, fmt.Sprintf("app%d", i), testreg.RandomLayer(t, 2_000))
		paths = append(paths, fmt.Sprintf("/v2/registry.test/app%d/blobs/%s", i, b.Digest))
	}
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	stop := make(chan struct{})
	drained := make(chan error, 1)
	go func() {
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			err := e.mirror.Drain(ctx)
			cancel()
			select {
			case <-stop:
				drained <- err
				return
			default:
			}
		}
	}()
	for _, p := range paths {
		if status, _, _, err := hashGET(e, p); err != nil || status != 200 {
			t.Fatalf("GET %s: %d %v", p, status, err)
		}
	}
	close(stop)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	e.drain()
	if fills := e.mirror.Fills(); len(fills) != 0 {
		t.Fatalf("fills left: %+v", fills)
	}
}

// drain waits for the fills in flight (and their commits) to end; the
// mirror keeps serving.
func (e *env) drain() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	if err := e.mirror.Drain(ctx); err != nil {
		e.t.Fatal(err)
	}
}
