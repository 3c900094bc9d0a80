package mirror

import "context"

// WaitRevalidations waits, without cancelling them as Drain does, until
// no revalidation runs in the background (or ctx ends).
func (m *Mirror) WaitRevalidations(ctx context.Context) error { return m.revals.drain(ctx, false) }
