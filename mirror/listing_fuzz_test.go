package mirror

import (
	"strings"
	"testing"
)

// linkSeeds are Link header values as registries send them, and broken
// ones.
var linkSeeds = []string{
	``,
	`</v2/library/alpine/tags/list?last=3.19&n=100>; rel="next"`,
	`</v2/x/tags/list?n=2&last=b>; rel=next`,
	`<https://registry.example/v2/x/tags/list?last=b>; rel="next"`,
	`<//other.example/v2/x/tags/list?last=b>; rel="next"`,
	`</v2/x/tags/list?last=a>; rel="prev", </v2/x/tags/list?last=c>; rel="next"`,
	`</a>; title="x, rel=next"; rel="prev", </b>; REL="Next"`,
	`</a>; rel="prev next"`,
	`</a>; rel="next`,
	`</a; rel="next"`,
	`<>; rel="next"`,
	`</a>; rel; rel=next`,
	`</a>; title="a \" b"; rel="next"`,
	`junk, </a>; rel="next"`,
	`</a>, , ,; rel=next`,
	`<%zz>; rel="next"`,
	`</a>;;;rel=next`,
	strings.Repeat(`</a>; rel="prev", `, 100) + `</b>; rel="next"`,
}

// FuzzNextLink: whatever Link header upstream sends, nextLinkTarget
// never panics, finds a target only where the header holds it between
// '<' and '>' and names "next", and finds that target again in the
// header it would be sent in; nextLink parses only what it finds.
func FuzzNextLink(f *testing.F) {
	for _, s := range linkSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		target, ok := nextLinkTarget(h)
		u := nextLink(h)
		if !ok {
			if u != nil {
				t.Fatalf("%q: nextLink %v without a target", h, u)
			}
			return
		}
		if !strings.Contains(h, "<"+target+">") || strings.Contains(target, ">") {
			t.Fatalf("%q: target %q is not a <…> of the header", h, target)
		}
		if !strings.Contains(strings.ToLower(h), "next") {
			t.Fatalf("%q: target %q without rel=next", h, target)
		}
		if again, ok := nextLinkTarget("<" + target + `>; rel="next"`); !ok || again != target {
			t.Fatalf("%q: target %q reads back as %q, %v", h, target, again, ok)
		}
	})
}
