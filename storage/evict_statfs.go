//go:build linux || darwin || freebsd

package storage

import (
	"fmt"
	"syscall"
)

// DiskFree returns an EvictOptions.FreeSpace for the filesystem holding
// dir (the filesystem driver's root): the bytes available to an
// unprivileged writer, as statfs reports them.
func DiskFree(dir string) func() (int64, error) {
	return func() (int64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("free space of %s: %w", dir, err)
		}
		// A real disk's available blocks times their size is far below
		// 2^63 bytes.
		return int64(st.Bavail) * st.Bsize, nil //nolint:gosec // G115: see above
	}
}
