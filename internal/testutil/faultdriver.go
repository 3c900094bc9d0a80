package testutil

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// FaultDriver wraps a storage driver and fails the operations set with
// Fail (Move, Stat, PutContent, Reader) on paths that contain Match, the
// way distribution's filesystem driver reports a local disk's failure: a
// storagedriver.Error naming the driver around an *os.PathError around
// the errno. A PutContent that fails leaves an empty temporary file
// "<path>.<uuid>.tmp" beside the path, as the filesystem driver does when
// the disk fills between creating it and writing it.
type FaultDriver struct {
	storagedriver.StorageDriver
	// Match selects the paths that fail ("/blobs/", "/_links/").
	Match string

	mu   sync.Mutex
	fail map[string]error
}

// Fail makes operation op fail with err from now on (nil: succeed again).
func (d *FaultDriver) Fail(op string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail == nil {
		d.fail = map[string]error{}
	}
	d.fail[op] = err
}

func (d *FaultDriver) fault(op, p string) error {
	d.mu.Lock()
	err := d.fail[op]
	d.mu.Unlock()
	if err != nil && strings.Contains(p, d.Match) {
		return storagedriver.Error{DriverName: d.Name(), Detail: &os.PathError{Op: op, Path: p, Err: err}}
	}
	return nil
}

// Move implements storagedriver.StorageDriver; the destination decides.
func (d *FaultDriver) Move(ctx context.Context, from, to string) error {
	if err := d.fault("Move", to); err != nil {
		return err
	}
	return d.StorageDriver.Move(ctx, from, to)
}

// Stat implements storagedriver.StorageDriver.
func (d *FaultDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	if err := d.fault("Stat", p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Stat(ctx, p)
}

// PutContent implements storagedriver.StorageDriver.
func (d *FaultDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.fault("PutContent", p); err != nil {
		_ = d.StorageDriver.PutContent(ctx, TempName(p), nil)
		return err
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}

// Reader implements storagedriver.StorageDriver (EMFILE: the open fails).
func (d *FaultDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := d.fault("Reader", p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Reader(ctx, p, offset)
}

// TempName returns a name of the form the filesystem driver gives the
// temporary file of a PutContent of p: "<p>.<uuid>.tmp".
func TempName(p string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s.%x-%x-%x-%x-%x.tmp", p, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
