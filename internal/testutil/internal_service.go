package testutil

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
)

// LoopbackNetworks are the loopback networks, opened as an operator's
// allowNetworks would for blob storage on the proxy's own host.
var LoopbackNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// InternalService starts a loopback server standing for a service on the
// proxy's host or network that an upstream must not reach through the
// proxy (an admin API, a database's HTTP port): it counts requests and
// answers 200 with a body and a length of its own.
func InternalService(t testing.TB) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Length", "15")
		_, _ = io.WriteString(w, "internal secret")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}
