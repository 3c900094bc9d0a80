package auth

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseChallenges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		want   []Challenge
	}{
		{
			name:   "bearer docker hub",
			values: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			want: []Challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}}},
		},
		{
			name:   "basic",
			values: []string{`Basic realm="Registry Realm"`},
			want:   []Challenge{{Scheme: "basic", Params: map[string]string{"realm": "Registry Realm"}}},
		},
		{
			name:   "scheme and names are case-insensitive",
			values: []string{`BEARER Realm="r", SERVICE=svc`},
			want:   []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "r", "service": "svc"}}},
		},
		{
			name:   "comma inside quotes",
			values: []string{`Bearer realm="https://a/token",scope="repository:a:pull,push repository:b:pull"`},
			want: []Challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://a/token", "scope": "repository:a:pull,push repository:b:pull"}}},
		},
		{
			name:   "escaped quote",
			values: []string{`Basic realm="say \"hi\", ok"`},
			want:   []Challenge{{Scheme: "basic", Params: map[string]string{"realm": `say "hi", ok`}}},
		},
		{
			name:   "several challenges in one header",
			values: []string{`Bearer realm="https://a/t", service="s", Basic realm="b"`},
			want: []Challenge{
				{Scheme: "bearer", Params: map[string]string{"realm": "https://a/t", "service": "s"}},
				{Scheme: "basic", Params: map[string]string{"realm": "b"}},
			},
		},
		{
			name:   "several headers",
			values: []string{`Basic realm="b"`, `Bearer realm="https://a/t"`},
			want: []Challenge{
				{Scheme: "basic", Params: map[string]string{"realm": "b"}},
				{Scheme: "bearer", Params: map[string]string{"realm": "https://a/t"}},
			},
		},
		{
			name:   "bare scheme then another",
			values: []string{`Negotiate, Basic realm=x`},
			want: []Challenge{
				{Scheme: "negotiate", Params: map[string]string{}},
				{Scheme: "basic", Params: map[string]string{"realm": "x"}},
			},
		},
		{
			name:   "token68",
			values: []string{`Negotiate abc+/d==, Basic realm=x`},
			want: []Challenge{
				{Scheme: "negotiate", Params: map[string]string{"": "abc+/d=="}},
				{Scheme: "basic", Params: map[string]string{"realm": "x"}},
			},
		},
		{
			name:   "spaces around equals and unterminated quote",
			values: []string{`Bearer realm = "https://a/t" , service="unterminated`},
			want:   []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://a/t", "service": "unterminated"}}},
		},
		{
			name:   "first duplicate parameter wins",
			values: []string{`Bearer realm="a", realm="b"`},
			want:   []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "a"}}},
		},
		{name: "empty", values: []string{""}, want: nil},
		{name: "garbage", values: []string{`"=,;@`}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseChallenges(tt.values)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseChallenges(%q)\n got %#v\nwant %#v", tt.values, got, tt.want)
			}
		})
	}
}

func TestParseChallengesBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value string
		check func(t *testing.T, got []Challenge)
	}{
		{
			name:  "many challenges",
			value: strings.Repeat("Basic realm=x, ", 1000),
			check: func(t *testing.T, got []Challenge) {
				if len(got) > maxChallenges {
					t.Fatalf("got %d challenges, want at most %d", len(got), maxChallenges)
				}
			},
		},
		{
			name:  "many params",
			value: "Bearer " + strings.Repeat("a=b, ", 1000),
			check: func(t *testing.T, got []Challenge) {
				if len(got) != 1 || len(got[0].Params) > maxChallengeParams {
					t.Fatalf("got %d challenges / params %v", len(got), got)
				}
			},
		},
		{
			name:  "huge header",
			value: `Bearer realm="` + strings.Repeat("x", 1<<20) + `"`,
			check: func(t *testing.T, got []Challenge) {
				if len(got) != 1 || len(got[0].Realm()) > maxChallengeBytes {
					t.Fatalf("realm not bounded: %d", len(got[0].Realm()))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, ParseChallenges([]string{tt.value})) })
	}
}

func TestChallengeScopes(t *testing.T) {
	t.Parallel()
	c := ParseChallenges([]string{`Bearer realm="r",scope="repository:a:pull repository:b:pull"`})[0]
	if got := c.Scopes(); !reflect.DeepEqual(got, []string{"repository:a:pull", "repository:b:pull"}) {
		t.Fatalf("Scopes() = %q", got)
	}
}
