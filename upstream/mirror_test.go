package upstream_test

import (
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/upstream"
)

// Registry must satisfy the interface its consumer defines.
var _ mirror.Upstream = (*upstream.Registry)(nil)
