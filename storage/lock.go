package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockDir takes an exclusive, non-blocking flock on <dir>/.lock, the
// filesystem driver's cache directory. alone reports that this process is
// the only server on the directory: every upload left in it was then
// abandoned by a crash and can be removed at once. The lock lives as long
// as the returned file stays open; the caller closes it on every path.
//
// A directory held by another process is (nil, false, nil). Any other
// failure (the directory cannot be created, a file system without locks)
// is returned with its cause: the caller cannot know whether it is alone.
func LockDir(dir string) (lock *os.File, alone bool, err error) {
	return lockDir(dir, syscall.Flock)
}

func lockDir(dir string, flock func(fd int, how int) error) (*os.File, bool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, false, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // G304: the operator's cache directory, a fixed name
	if err != nil {
		return nil, false, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	err = flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return f, true, nil
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("cache directory %s: locking %s: %w", dir, filepath.Join(dir, ".lock"), err)
}
