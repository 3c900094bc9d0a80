package netguard

import (
	"net/http"
	"strings"
	"testing"
)

func TestLoop(t *testing.T) {
	t.Parallel()
	a, b := NewLoop(), NewLoop()
	if a.Token() == b.Token() || !validToken(a.Token()) {
		t.Fatalf("tokens %q and %q: want two different %s-<16 hex>", a.Token(), b.Token(), ViaName)
	}
	via := a.Via(t.Context())
	if via != "1.1 "+a.Token() {
		t.Fatalf("Via = %q", via)
	}
	h := http.Header{"Via": {"1.0 fred, 1.1 squid.corp (squid/6.1)", via}}
	if !a.Looped(h) || b.Looped(h) {
		t.Fatalf("Looped: a %v (want true), b %v (want false)", a.Looped(h), b.Looped(h))
	}
	// b serves the request and sends one upstream on its behalf: a's
	// entry travels on, so the request is recognised when it reaches a.
	hops := Hops(h)
	if len(hops) != 1 || hops[0] != a.Token() {
		t.Fatalf("Hops = %q, want only a's token (other proxies skipped)", hops)
	}
	via2 := b.Via(WithHops(t.Context(), hops))
	if via2 != "1.1 "+a.Token()+", 1.1 "+b.Token() {
		t.Fatalf("Via on behalf = %q", via2)
	}
	h2 := http.Header{"Via": {via2}}
	if !a.Looped(h2) || !b.Looped(h2) || NewLoop().Looped(h2) {
		t.Fatal("a loop through two proxies is not recognised by both, or a third proxy sees one")
	}
	if WithHops(t.Context(), nil) != t.Context() {
		t.Fatal("WithHops without hops changed the context")
	}
}

// TestLoopBounds: a chain of more than MaxHops proxies of this kind is a
// loop; Hops never returns more than MaxHops+1 entries; look-alike
// tokens are not ours.
func TestLoopBounds(t *testing.T) {
	t.Parallel()
	var entries []string
	for range MaxHops + 5 {
		entries = append(entries, "1.1 "+NewLoop().Token())
	}
	h := http.Header{"Via": {strings.Join(entries[:MaxHops], ", ")}}
	if NewLoop().Looped(h) {
		t.Fatalf("%d hops taken as a loop", MaxHops)
	}
	h = http.Header{"Via": {strings.Join(entries, ", ")}}
	if !NewLoop().Looped(h) {
		t.Fatalf("%d hops not taken as a loop", len(entries))
	}
	if n := len(Hops(h)); n != MaxHops+1 {
		t.Fatalf("Hops returned %d entries, want %d", n, MaxHops+1)
	}
	for _, v := range []string{ViaName, ViaName + "-", ViaName + "-xyz", ViaName + "-0123456789abcdeg", ViaName + "-0123456789abcdef0", "1.1"} {
		if hops := Hops(http.Header{"Via": {"1.1 " + v}}); len(hops) != 0 {
			t.Errorf("Via 1.1 %s read as hop %q", v, hops)
		}
	}
}
