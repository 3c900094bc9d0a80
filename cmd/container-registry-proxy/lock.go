package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockCacheDir takes an exclusive, non-blocking flock on <dir>/.lock. It
// reports whether this process is the only server on the directory: then
// every upload left in it was abandoned by a crash and can be removed at
// once. The lock lives as long as the returned file stays open.
func lockCacheDir(dir string) (*os.File, bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false, nil
	}
	return f, true, nil
}
