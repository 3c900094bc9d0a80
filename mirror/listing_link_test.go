package mirror

import (
	"net/http"
	"net/url"
	"testing"
)

// TestNextLink: the rel="next" link of a Link header, wherever it is
// among the link-values and however rel is written; nothing for prev
// links, a "next" inside another parameter, or a malformed header.
func TestNextLink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ h, want string }{
		{`</v2/x/tags/list?last=b&n=2>; rel="next"`, "/v2/x/tags/list?last=b&n=2"},
		{`</v2/x/tags/list?last=b>; rel=next`, "/v2/x/tags/list?last=b"},
		{`</p>; rel="prev", </n>; rel="next"`, "/n"},
		{`</p>; title="x, rel=next"; rel="prev", </n>; REL="Next"`, "/n"},
		{`</n>; rel="prev next"`, "/n"},
		{`</n>; title="a \" b"; rel="next"`, "/n"},
		{`</p>; rel="prev"`, ""},
		{`</p>; rel="nextpage"`, ""},
		{`</p>; title="next"`, ""},
		{`</n; rel="next"`, ""},
		{`junk, </n>; rel="next"`, ""},
		{`<%zz>; rel="next"`, ""},
		{``, ""},
	} {
		got := ""
		if u := nextLink(tc.h); u != nil {
			got = u.String()
		}
		if got != tc.want {
			t.Errorf("nextLink(%q) = %q, want %q", tc.h, got, tc.want)
		}
	}
}

// TestNextQuery: a next page is asked for by its query at the
// repository's own path; an absolute link is accepted on the upstream's
// own scheme, host and port (default port written or not), refused
// elsewhere.
func TestNextQuery(t *testing.T) {
	t.Parallel()
	base, _ := url.Parse("https://registry.example/v2/x/tags/list")
	resp := &http.Response{Request: &http.Request{URL: base}}
	for _, tc := range []struct {
		link, want string
		refused    bool
	}{
		{`</v2/x/tags/list?n=2&last=b>; rel="next"`, "last=b&n=2", false},
		{`</elsewhere?last=b>; rel="next"`, "last=b", false},
		{`<https://registry.example/v2/x/tags/list?last=b>; rel="next"`, "last=b", false},
		{`<https://REGISTRY.example:443/v2/x/tags/list?last=b>; rel="next"`, "last=b", false},
		{`<https://other.example/v2/x/tags/list?last=b>; rel="next"`, "", true},
		{`<//other.example/v2/x/tags/list?last=b>; rel="next"`, "", true},
		{`<http://registry.example/v2/x/tags/list?last=b>; rel="next"`, "", true},
		{`<https://registry.example:8443/v2/x/tags/list?last=b>; rel="next"`, "", true},
		{`</v2/x/tags/list?last=b>; rel="prev"`, "", false},
		{`</v2/x/tags/list?last=b;c&n=%zz&n=2>; rel="next"`, "n=2", false},
	} {
		q, err := nextQuery(resp, tc.link)
		if (err != nil) != tc.refused || (err == nil && q.Encode() != tc.want) {
			t.Errorf("nextQuery(%s) = %q, %v; want %q, refused %v", tc.link, q.Encode(), err, tc.want, tc.refused)
		}
	}
}
