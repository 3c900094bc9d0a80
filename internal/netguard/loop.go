package netguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// ViaName is the received-by pseudonym of this proxy in Via headers,
// followed by "-" and a per-process random id.
const ViaName = "container-registry-proxy"

// MaxHops bounds the proxies of this kind one request may pass through:
// a request that already passed more is treated as a loop (a cycle
// through several proxies, each seeing it once).
const MaxHops = 8

// Loop marks the requests one process sends upstream with a Via entry of
// its own ("1.1 container-registry-proxy-<random id>") and recognises
// them when they come back to it, through a load balancer, another host
// name or another proxy of this kind. It is safe for concurrent use.
type Loop struct {
	token string
}

// NewLoop returns a Loop with a new random id.
func NewLoop() *Loop {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return &Loop{token: ViaName + "-" + hex.EncodeToString(b[:])}
}

// Token is this process's received-by token.
func (l *Loop) Token() string { return l.token }

// Looped reports whether a request with header h was sent by this
// process (its token is in Via), or passed through more than MaxHops
// proxies of this kind.
func (l *Loop) Looped(h http.Header) bool {
	hops := Hops(h)
	if len(hops) > MaxHops {
		return true
	}
	for _, hop := range hops {
		if hop == l.token {
			return true
		}
	}
	return false
}

// Via is the Via header of a request sent upstream on behalf of ctx: the
// proxies of this kind the request being served came through
// (WithHops), then this process.
func (l *Loop) Via(ctx context.Context) string {
	hops, _ := ctx.Value(hopsKey{}).([]string) // absent: no hops
	var b strings.Builder
	for _, h := range hops {
		b.WriteString("1.1 ")
		b.WriteString(h)
		b.WriteString(", ")
	}
	b.WriteString("1.1 ")
	b.WriteString(l.token)
	return b.String()
}

type hopsKey struct{}

// WithHops returns ctx carrying the proxies of this kind a request came
// through (Hops of its header), for Via of the requests sent upstream on
// its behalf.
func WithHops(ctx context.Context, hops []string) context.Context {
	if len(hops) == 0 {
		return ctx
	}
	return context.WithValue(ctx, hopsKey{}, hops)
}

// Hops returns the received-by tokens of proxies of this kind in h's Via
// entries, in order, at most MaxHops+1 of them; other entries (other
// proxies) are skipped.
func Hops(h http.Header) []string {
	var hops []string
	for _, v := range h.Values("Via") {
		for entry := range strings.SplitSeq(v, ",") {
			f := strings.Fields(entry)
			if len(f) < 2 || !validToken(f[1]) {
				continue
			}
			hops = append(hops, f[1])
			if len(hops) > MaxHops {
				return hops
			}
		}
	}
	return hops
}

// validToken reports whether s is ViaName-<16 hex digits>.
func validToken(s string) bool {
	id, ok := strings.CutPrefix(s, ViaName+"-")
	if !ok || len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
