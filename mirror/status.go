package mirror

import (
	"sort"
	"time"
)

// FillStatus describes one blob download in flight, for the status page.
type FillStatus struct {
	Digest    string
	Namespace string
	Repo      string
	Written   int64
	Size      int64 // -1 when upstream did not say
	Started   time.Time
	Clients   int
	// Source is where the bytes come from: "upstream", another replica's
	// URL, or "" before the fill's Fetcher decided.
	Source string
	// ForPeer says another replica asked for the fill.
	ForPeer bool
}

// Fills returns the fills in flight, oldest first.
func (m *Mirror) Fills() []FillStatus {
	m.mu.Lock()
	fills := make([]*fill, 0, len(m.fills))
	refs := make([]int, 0, len(m.fills))
	for _, f := range m.fills {
		fills = append(fills, f)
		refs = append(refs, f.refs-1)
	}
	m.mu.Unlock()
	out := make([]FillStatus, 0, len(fills))
	for i, f := range fills {
		f.mu.Lock()
		out = append(out, FillStatus{Digest: f.digest.String(), Namespace: f.ns, Repo: f.repo,
			Written: f.written, Size: f.size, Started: f.started, Clients: refs[i],
			Source: f.source, ForPeer: f.forPeer})
		f.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}
