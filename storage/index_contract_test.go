package storage_test

import (
	"path/filepath"
	"testing"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/storage/indextest"
)

// TestIndexContract runs the contract suite of storage.Index on the
// implementations of this package; cluster's tests run it on the Redis
// index.
func TestIndexContract(t *testing.T) {
	t.Parallel()
	t.Run("mem", func(t *testing.T) {
		t.Parallel()
		indextest.Run(t, func(t *testing.T) storage.Index {
			m := storage.NewMemIndex()
			t.Cleanup(func() { m.Close() })
			return m
		})
	})
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		indextest.Run(t, func(t *testing.T) storage.Index {
			b, err := storage.OpenBoltIndex(filepath.Join(t.TempDir(), "index.db"), storage.BoltOptions{FlushInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		})
	})
}
