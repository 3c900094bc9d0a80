package auth

import (
	"context"
	"sync/atomic"
)

// Both are Sources.
var (
	_ Source = (*Keychain)(nil)
	_ Source = (*SwapSource)(nil)
)

// SwapSource is a Source over a Keychain that a configuration reload
// replaces without rebuilding the registry clients that consult it: their
// connections and cached tokens stay (tokens are cached per identity, so
// new credentials fetch new ones). A nil Keychain holds no credentials.
// It is safe for concurrent use.
type SwapSource struct {
	kc atomic.Pointer[Keychain]
}

// NewSwapSource returns a SwapSource serving kc.
func NewSwapSource(kc *Keychain) *SwapSource {
	s := &SwapSource{}
	s.Swap(kc)
	return s
}

// Swap serves kc from now on; lookups already running finish with the
// keychain they started with.
func (s *SwapSource) Swap(kc *Keychain) { s.kc.Store(kc) }

// Lookup implements Source with the keychain in force.
func (s *SwapSource) Lookup(ctx context.Context, host string) (Credentials, bool, error) {
	kc := s.kc.Load()
	if kc == nil {
		return Credentials{}, false, nil
	}
	return kc.Lookup(ctx, host)
}

// Invalidate implements Source with the keychain in force.
func (s *SwapSource) Invalidate(host string) {
	if kc := s.kc.Load(); kc != nil {
		kc.Invalidate(host)
	}
}
