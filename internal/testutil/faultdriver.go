package testutil

import (
	"context"
	"os"
	"strings"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// FaultDriver wraps a storage driver and fails the operations set with
// Fail (Move, Stat, PutContent) on paths that contain Match, the way a
// local disk reports it (*os.PathError around the errno). A PutContent
// that fails leaves an empty file behind, as a full disk does.
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
		return &os.PathError{Op: op, Path: p, Err: err}
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
		_ = d.StorageDriver.PutContent(ctx, p, nil)
		return err
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}
