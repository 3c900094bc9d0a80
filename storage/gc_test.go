package storage

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestUsageRows(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			f := newFixture(t, s)
			storeBlob(t, s, []byte{0x1f, 0x8b, 1, 2, 3, 4, 5}) // linked by no repository
			idx := NewMemIndex()
			if _, err := s.RebuildIndex(ctx, idx, nil); err != nil {
				t.Fatal(err)
			}
			rows, err := s.Usage(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			var all int64
			for _, n := range f.sizes {
				all += n
			}
			want := []UsageRow{
				{Upstream: "docker.io", Repo: "library/alpine", Blobs: 3, Manifests: 2, Bytes: all},
				{Upstream: "registry.local_5000", Repo: "team/sub/app", Blobs: 1, Manifests: 1, Bytes: f.sizes[f.layer1] + f.sizes[f.manifest]},
				{Upstream: "", Repo: UnlinkedRepo, Blobs: 1, Bytes: 7},
				{Blobs: 4, Manifests: 2, Bytes: all + 7},
			}
			if !slices.Equal(rows, want) {
				t.Fatalf("Usage rows\n got %+v\nwant %+v", rows, want)
			}
		})
	}
}

func TestOpenIndexForTool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cases := []struct {
		name       string
		setup      func(t *testing.T, s *Store, path string) (cleanup func())
		write      bool
		wantErr    error
		wantInfo   ToolIndexInfo
		wantBolt   bool
		keepsBytes bool // the file on disk is left as it was
	}{
		{
			name: "free file, read-only",
			setup: func(t *testing.T, s *Store, path string) func() {
				b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.RebuildIndex(ctx, b, nil); err != nil {
					t.Fatal(err)
				}
				b.Close()
				return func() {}
			},
			wantBolt: true, keepsBytes: true,
		},
		{
			name:     "missing file, write: created and rebuilt",
			setup:    func(*testing.T, *Store, string) func() { return func() {} },
			write:    true,
			wantInfo: ToolIndexInfo{Repaired: Reconcile{Added: 5}},
			wantBolt: true,
		},
		{
			name:     "missing file, read-only: walk",
			setup:    func(*testing.T, *Store, string) func() { return func() {} },
			wantInfo: ToolIndexInfo{Walked: true, Repaired: Reconcile{Added: 5}},
		},
		{
			name: "damaged file, read-only: walk, file untouched",
			setup: func(t *testing.T, _ *Store, path string) func() {
				if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
					t.Fatal(err)
				}
				return func() {}
			},
			wantInfo:   ToolIndexInfo{Walked: true, Repaired: Reconcile{Added: 5}},
			keepsBytes: true,
		},
		{
			name: "held by a running proxy, read-only: walk",
			setup: func(t *testing.T, _ *Store, path string) func() {
				b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				return func() { b.Close() }
			},
			wantInfo:   ToolIndexInfo{Locked: true, Walked: true, Repaired: Reconcile{Added: 5}},
			keepsBytes: true,
		},
		{
			name: "held by a running proxy, write: refused",
			setup: func(t *testing.T, _ *Store, path string) func() {
				b, err := OpenBoltIndex(path, BoltOptions{FlushInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				return func() { b.Close() }
			},
			write:      true,
			wantErr:    ErrIndexLocked,
			wantInfo:   ToolIndexInfo{Locked: true},
			keepsBytes: true,
		},
	}
	for _, b := range []backend{backends()[1], s3Backend()} {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				s := b.new(t)
				f := newFixture(t, s)
				path := filepath.Join(t.TempDir(), "index.db")
				cleanup := tc.setup(t, s, path)
				defer cleanup()
				before, _ := os.ReadFile(path)
				idx, info, err := s.OpenIndexForTool(ctx, path, tc.write, 20*time.Millisecond)
				if info != tc.wantInfo {
					t.Fatalf("info = %+v, want %+v", info, tc.wantInfo)
				}
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("err = %v, want %v", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer idx.Close()
				if _, isBolt := idx.(*BoltIndex); isBolt != tc.wantBolt {
					t.Fatalf("index is %T", idx)
				}
				var all int64
				for _, n := range f.sizes {
					all += n
				}
				if n, c, err := idx.Usage(ctx); err != nil || n != all || c != 5 {
					t.Fatalf("Usage = %d, %d, %v; want %d, 5", n, c, err, all)
				}
				if after, _ := os.ReadFile(path); tc.keepsBytes && !slices.Equal(before, after) {
					t.Fatal("the index file was changed")
				}
			})
		}
	}
}
