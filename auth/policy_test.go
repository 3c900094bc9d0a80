package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
	"golang.org/x/crypto/bcrypt"
)

func writeHtpasswd(t *testing.T, lines ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func bcryptLine(t *testing.T, user, pass string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h)
}

func TestLoadHtpasswd(t *testing.T) {
	good := bcryptLine(t, "alice", "pw")
	cases := []struct {
		name  string
		lines []string
		err   string
	}{
		{"bcrypt", []string{"# users", good, ""}, ""},
		{"md5 refused", []string{"bob:$apr1$abc$def"}, "only bcrypt"},
		{"no colon", []string{"bob"}, ":1: want user:bcrypt-hash"},
		{"empty", []string{"# nobody"}, "no users"},
		{"broken hash", []string{"bob:$2y$xx"}, "bob"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := writeHtpasswd(t, tc.lines...)
			h, err := LoadHtpasswd(f)
			if tc.err == "" {
				if err != nil || !h.Verify("alice", "pw") || h.Verify("alice", "nope") || h.Verify("carol", "pw") {
					t.Fatalf("LoadHtpasswd: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), f) {
				t.Fatalf("error %v, want one naming %s and %q", err, f, tc.err)
			}
		})
	}
}

func TestPolicyModes(t *testing.T) {
	users, err := LoadHtpasswd(writeHtpasswd(t, bcryptLine(t, "alice", "sekrit-a"), bcryptLine(t, "carol", "sekrit-c")))
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	check := func(ctx context.Context, repo, kind, ref string) error {
		checks.Add(1)
		if a := ctxAuthorizationForTest(ctx); a == "Bearer good" {
			return nil
		}
		return oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "no")
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := NewPolicy(PolicyOptions{Users: users, CheckTTL: time.Minute, Now: func() time.Time { return now }, Registries: map[string]RegistryAccess{
		"pub.test":  {Mode: Public},
		"auth.test": {Mode: Authenticated},
		"few.test":  {Mode: Users, Users: []string{"carol"}},
		"up.test":   {Mode: Upstream, Check: check},
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := func(hdr string) *http.Request {
		r := httptest.NewRequest("GET", "/v2/x/manifests/latest", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		return r
	}
	basic := func(u, pw string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, pw)
		return r.Header.Get("Authorization")
	}
	cases := []struct {
		name, host, hdr string
		status          int
	}{
		{"public anonymous", "pub.test", "", 0},
		{"authenticated anonymous", "auth.test", "", 401},
		{"authenticated user", "auth.test", basic("alice", "sekrit-a"), 0},
		{"authenticated wrong password", "auth.test", basic("alice", "x"), 401},
		{"users listed", "few.test", basic("carol", "sekrit-c"), 0},
		{"users not listed", "few.test", basic("alice", "sekrit-a"), 403},
		{"upstream anonymous", "up.test", "", 401},
		{"upstream rejected", "up.test", "Bearer bad", 401},
		{"upstream accepted", "up.test", "Bearer good", 0},
		{"upstream accepted, remembered", "up.test", "Bearer good", 0},
		{"unknown registry is public", "other.test", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, id, err := p.Check(req(tc.hdr), tc.host, "team/app", "manifest", "latest", false)
			if tc.status == 0 && err != nil {
				t.Fatalf("denied %s: %v", id, err)
			}
			if tc.status != 0 && oci.StatusOf(err) != tc.status {
				t.Fatalf("status %d (%v), want %d", oci.StatusOf(err), err, tc.status)
			}
			if tc.status == 401 {
				var oe *oci.Error
				if !asOCI(err, &oe) || oe.Challenge != ProxyChallenge {
					t.Fatal("a 401 must carry the Basic challenge")
				}
			}
			if strings.Contains(id, "good") || strings.Contains(id, "sekrit") {
				t.Fatalf("identity %q leaks a secret", id)
			}
		})
	}
	if n := checks.Load(); n != 2 {
		t.Fatalf("upstream checks = %d, want 2 (a positive answer is remembered)", n)
	}
	now = now.Add(2 * time.Minute)
	if _, _, err := p.Check(req("Bearer good"), "up.test", "team/app", "manifest", "latest", false); err != nil || checks.Load() != 3 {
		t.Fatalf("after the TTL the check must run again: %v, %d", err, checks.Load())
	}
	if err := p.CheckBase(req("")); oci.StatusOf(err) != 401 {
		t.Fatalf("base for anonymous with restricted registries: %v", err)
	}
	if err := p.CheckBase(req(basic("alice", "sekrit-a"))); err != nil {
		t.Fatalf("base for a user: %v", err)
	}
	if _, err := NewPolicy(PolicyOptions{Registries: map[string]RegistryAccess{"x": {Mode: Authenticated}}}); err == nil {
		t.Fatal("authenticated without users must be refused")
	}
}

func ctxAuthorizationForTest(ctx context.Context) string { return authorizationFrom(ctx) }

func asOCI(err error, oe **oci.Error) bool {
	e, ok := err.(*oci.Error)
	if ok {
		*oe = e
	}
	return ok
}
