package upstream

import (
	"errors"
	"net"
	"testing"
)

func TestDialGuard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint string
		address  string
		wantErr  bool
	}{
		{name: "public", address: "93.184.216.34:443"},
		{name: "loopback", address: "127.0.0.1:5000"},
		{name: "private", address: "10.1.2.3:443"},
		{name: "metadata", address: "169.254.169.254:80", wantErr: true},
		{name: "ipv6 link-local", address: "[fe80::1]:443", wantErr: true},
		{name: "unspecified", address: "0.0.0.0:443", wantErr: true},
		{name: "multicast", address: "224.0.0.1:443", wantErr: true},
		{name: "configured link-local endpoint", endpoint: "169.254.10.10", address: "169.254.10.10:5000"},
		{name: "other link-local than endpoint", endpoint: "169.254.10.10", address: "169.254.169.254:80", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dialGuard(net.ParseIP(tt.endpoint))("tcp", tt.address, nil)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrForbiddenAddress)) {
				t.Fatalf("dialGuard(%s) = %v, want error %v", tt.address, err, tt.wantErr)
			}
		})
	}
}
