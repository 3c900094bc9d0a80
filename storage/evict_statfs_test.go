//go:build linux || darwin || freebsd

package storage

import "testing"

func TestDiskFree(t *testing.T) {
	t.Parallel()
	free, err := DiskFree(t.TempDir())()
	if err != nil || free <= 0 {
		t.Fatalf("DiskFree = %d, %v", free, err)
	}
	if _, err := DiskFree("/nonexistent/dir")(); err == nil {
		t.Fatal("no error for a missing directory")
	}
}
