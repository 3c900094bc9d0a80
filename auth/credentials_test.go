package auth

import (
	"fmt"
	"strings"
	"testing"
)

func TestCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		c        Credentials
		zero     bool
		identity string // prefix
	}{
		{name: "anonymous", c: Credentials{}, zero: true, identity: ""},
		{name: "user", c: Credentials{Username: "bob", Password: "s3cret-pass"}, identity: "bob#"},
		{name: "password only", c: Credentials{Password: "s3cret-pass"}, identity: "#"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.c.IsZero() != tt.zero {
				t.Fatalf("IsZero() = %v", tt.c.IsZero())
			}
			id := tt.c.Identity()
			if !strings.HasPrefix(id, tt.identity) || (tt.zero && id != "") {
				t.Fatalf("Identity() = %q, want prefix %q", id, tt.identity)
			}
			for _, s := range []string{id, tt.c.String(), fmt.Sprintf("%v %+v %#v", tt.c, tt.c, tt.c)} {
				if tt.c.Password != "" && strings.Contains(s, tt.c.Password) {
					t.Fatalf("password leaked in %q", s)
				}
			}
		})
	}
	a := Credentials{Username: "bob", Password: "one"}
	b := Credentials{Username: "bob", Password: "two"}
	if a.Identity() == b.Identity() {
		t.Fatal("different passwords share an identity")
	}
}
