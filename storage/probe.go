package storage

import (
	"context"
	"errors"
	"fmt"
)

// healthRoot holds the readiness probe's files; the layout never uses it
// otherwise.
const healthRoot = "/_health"

// Probe writes a few bytes through the storage driver and removes them:
// whether the cache can store anything right now (a full disk, a
// read-only mount, a bucket without write permission fail it). Each Store
// writes a name of its own, so that replicas sharing a bucket do not
// disturb one another.
func (s *Store) Probe(ctx context.Context) error {
	p := healthRoot + "/probe-" + s.probeID
	if err := s.driver.PutContent(ctx, p, []byte("ok\n")); err != nil {
		// Nothing may stay behind, not even an empty file of a write
		// that failed half-way.
		if derr := s.driver.Delete(context.WithoutCancel(ctx), p); derr != nil && !notFound(derr) {
			err = errors.Join(err, derr)
		}
		return fmt.Errorf("storage not writable: %w", err)
	}
	if err := s.driver.Delete(ctx, p); err != nil {
		return fmt.Errorf("storage not writable: removing the probe: %w", err)
	}
	return nil
}
