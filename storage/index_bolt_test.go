package storage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestBoltPersistsAndFlushesOnClose(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "index.db")
	b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !b.NeedsRebuild() {
		t.Fatal("a new file should need a rebuild")
	}
	mustPut(t, b, entry("a", 7, t0, "docker.io/library/alpine"), manifestEntry("m", 3, t0, dig("a")))
	b.Touch(dig("a"), t0.Add(time.Hour))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.NeedsRebuild() || b.MovedAside() != "" {
		t.Fatal("an intact file should not need a rebuild")
	}
	if got := mustGet(t, b, dig("a")); !got.LastAccess.Equal(t0.Add(time.Hour)) || got.Repos[0] != "docker.io/library/alpine" {
		t.Fatalf("after reopen: %+v", got)
	}
	if r, _ := b.Referrers(ctx, dig("a")); !slices.Equal(r, digests("m")) {
		t.Fatalf("Referrers after reopen = %v", r)
	}
	if n, c, _ := b.Usage(ctx); n != 10 || c != 2 {
		t.Fatalf("Usage after reopen = %d, %d", n, c)
	}
}

func TestBoltDamagedFileMovedAside(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	valid := func(t *testing.T, path string) {
		b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, b, entry("a", 1, t0))
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("this is not a bolt file, it is text"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"zeroed header", func(t *testing.T, path string) {
			valid(t, path)
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(make([]byte, 8192), 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}},
		{"damaged entry", func(t *testing.T, path string) {
			valid(t, path)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Corrupt the JSON of the stored entry in place (bbolt
			// checksums only its meta pages).
			data = bytes.ReplaceAll(data, []byte(`"kind"`), []byte(`XXXXXX`))
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"other schema", func(t *testing.T, path string) {
			valid(t, path)
			b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucketMeta)).Put([]byte(keyVersion), []byte("0")) }); err != nil {
				t.Fatal(err)
			}
			b.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "index.db")
			tc.damage(t, path)
			damaged, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// A read-only open reports the damage and leaves the file alone.
			if _, err := OpenBoltIndex(path, BoltOptions{ReadOnly: true}); !errors.Is(err, ErrIndexUnreadable) {
				t.Fatalf("read-only open of a damaged file = %v, want ErrIndexUnreadable", err)
			}
			now := t0.Add(42 * time.Second)
			b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if !b.NeedsRebuild() {
				t.Fatal("NeedsRebuild = false after replacing a damaged file")
			}
			aside := b.MovedAside()
			if filepath.Dir(aside) != dir || !slices.Equal(mustRead(t, aside), damaged) {
				t.Fatalf("damaged file not kept at %q", aside)
			}
			if filepath.Base(aside) != "index.db.corrupt-20250301T120042.000000000Z" {
				t.Fatalf("moved aside as %s", filepath.Base(aside))
			}
			mustPut(t, b, entry("fresh", 3, t0))
			if n, c, _ := b.Usage(ctx); n != 3 || c != 1 {
				t.Fatalf("fresh index Usage = %d, %d", n, c)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoltLockedAndReadOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "index.db")
	if _, err := OpenBoltIndex(path, BoltOptions{ReadOnly: true}); err == nil {
		t.Fatal("read-only open of a missing file succeeded")
	}
	b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, entry("a", 1, t0))
	for _, ro := range []bool{false, true} {
		if _, err := OpenBoltIndex(path, BoltOptions{ReadOnly: ro, Timeout: 20 * time.Millisecond}); !errors.Is(err, ErrIndexLocked) {
			t.Fatalf("open (read-only %v) beside the holder = %v, want ErrIndexLocked", ro, err)
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a locked file was touched: %v", err)
	}
	b.Close()
	r, err := OpenBoltIndex(path, BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustGet(t, r, dig("a"))
	if err := r.Put(ctx, entry("b", 1, t0)); err == nil {
		t.Fatal("Put on a read-only index succeeded")
	}
	r.Touch(dig("a"), t0.Add(time.Hour))
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush on a read-only index = %v", err)
	}
}
