package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// ErrResourceExhausted is matched (errors.Is) by storage errors whose cause
// is that the process or the system ran out of file descriptors (EMFILE,
// ENFILE): the content may well be stored, it just cannot be opened right
// now. Callers answer 503 with Retry-After instead of taking the content
// for missing or damaged.
var ErrResourceExhausted = errors.New("out of file descriptors")

// causeDriver keeps the cause of a storage driver's errors reachable.
// distribution's drivers (through their base) wrap every error other than
// their own path errors in storagedriver.Error, which has no Unwrap: a
// full disk would not match errors.Is(err, syscall.ENOSPC) and descriptor
// exhaustion would look like any other failure. Each method returns its
// error through withCause.
type causeDriver struct{ storagedriver.StorageDriver }

func (d causeDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	b, err := d.StorageDriver.GetContent(ctx, p)
	return b, withCause(err)
}

// PutContent removes the temporary file a failed write left (temp.go).
func (d causeDriver) PutContent(ctx context.Context, p string, content []byte) error {
	err := withCause(d.StorageDriver.PutContent(ctx, p, content))
	if err != nil {
		if cerr := cleanFailedPut(ctx, d, p); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the temporary file: %w", cerr))
		}
	}
	return err
}

func (d causeDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	rc, err := d.StorageDriver.Reader(ctx, p, offset)
	return rc, withCause(err)
}

func (d causeDriver) Writer(ctx context.Context, p string, appendTo bool) (storagedriver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, p, appendTo)
	return w, withCause(err)
}

func (d causeDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	fi, err := d.StorageDriver.Stat(ctx, p)
	return fi, withCause(err)
}

func (d causeDriver) List(ctx context.Context, p string) ([]string, error) {
	l, err := d.StorageDriver.List(ctx, p)
	return l, withCause(err)
}

func (d causeDriver) Move(ctx context.Context, from, to string) error {
	return withCause(d.StorageDriver.Move(ctx, from, to))
}

func (d causeDriver) Delete(ctx context.Context, p string) error {
	return withCause(d.StorageDriver.Delete(ctx, p))
}

func (d causeDriver) RedirectURL(r *http.Request, p string) (string, error) {
	u, err := d.StorageDriver.RedirectURL(r, p)
	return u, withCause(err)
}

func (d causeDriver) Walk(ctx context.Context, p string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	return withCause(d.StorageDriver.Walk(ctx, p, f, options...))
}

// causeError is a storage error whose cause errors.Is and errors.As reach;
// it also matches ErrResourceExhausted when that cause is EMFILE or ENFILE.
// Its text is the driver's.
type causeError struct {
	driver string // "" when the error did not come wrapped by a driver
	err    error
}

func (e *causeError) Error() string {
	if e.driver == "" {
		return e.err.Error()
	}
	return e.driver + ": " + e.err.Error()
}

func (e *causeError) Unwrap() error { return e.err }

func (e *causeError) Is(target error) bool {
	return target == ErrResourceExhausted && outOfDescriptors(e.err)
}

func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// withCause returns err with its cause reachable (see causeDriver).
// Errors that need nothing (nil, the driver's path errors, errors that
// already unwrap to their cause and are not about descriptors) are
// returned as they are.
func withCause(err error) error {
	switch e := err.(type) { //nolint:errorlint // drivers return storagedriver.Error itself, unwrapped
	case nil:
		return nil
	case storagedriver.Error:
		if e.Detail != nil {
			return &causeError{driver: e.DriverName, err: e.Detail}
		}
	case *storagedriver.Error:
		if e != nil && e.Detail != nil {
			return &causeError{driver: e.DriverName, err: e.Detail}
		}
	}
	if outOfDescriptors(err) {
		return &causeError{err: err}
	}
	return err
}
