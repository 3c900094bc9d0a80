package mirror_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// TestTagsListName: tags/list answers with the name the client asked for,
// in its body and its Link header: the mirror path's
// registry.test_5000/team/app, ?ns='s team/app, and team/app for a
// request the shim rewrote (its Host names the registry).
func TestTagsListName(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	for _, tag := range []string{"a", "b", "c"} {
		reg.PushImage(t, "team/app", tag)
	}
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test:5000", reg: reg})
	cases := []struct {
		door, path, host, name, link string
	}{
		{"mirror path", "/v2/registry.test_5000/team/app/tags/list?n=1", "",
			"registry.test_5000/team/app", `</v2/registry.test_5000/team/app/tags/list?last=a&n=1>; rel="next"`},
		{"mirror path by host", "/v2/registry.test:5000/team/app/tags/list?n=1", "",
			"registry.test:5000/team/app", `</v2/registry.test:5000/team/app/tags/list?last=a&n=1>; rel="next"`},
		{"ns", "/v2/team/app/tags/list?n=1&ns=registry.test:5000", "",
			"team/app", `</v2/team/app/tags/list?last=a&n=1&ns=registry.test%3A5000>; rel="next"`},
		{"shim", "/v2/registry.test_5000/team/app/tags/list?n=1", "registry.test:5000",
			"team/app", `</v2/team/app/tags/list?last=a&n=1>; rel="next"`},
	}
	for _, tc := range cases {
		t.Run(tc.door, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var l struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%d: %v", resp.StatusCode, err)
			}
			if l.Name != tc.name || len(l.Tags) != 1 || l.Tags[0] != "a" {
				t.Errorf("name %q tags %v, want %q [a]", l.Name, l.Tags, tc.name)
			}
			if got := resp.Header.Get("Link"); got != tc.link {
				t.Errorf("Link = %s, want %s", got, tc.link)
			}
		})
	}
}

// tagsAnswer is a tags/list answer as a client sees it.
type tagsAnswer struct {
	status int
	tags   []string
	body   []byte
	resp   *http.Response
}

func listTags(t *testing.T, e *env, repo string) tagsAnswer {
	t.Helper()
	resp, body := e.do("GET", "/v2/registry.test/"+repo+"/tags/list")
	a := tagsAnswer{status: resp.StatusCode, body: body, resp: resp}
	if resp.StatusCode == http.StatusOK {
		var l struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatalf("tag list %s: %v", body, err)
		}
		a.tags = l.Tags
	}
	return a
}

// storedTagList reports whether the proxy kept a tag list of repo.
func storedTagList(t *testing.T, e *env, repo string) bool {
	t.Helper()
	_, err := e.store.GetTagList(t.Context(), "registry.test", repo, 1<<30)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestTagListBounds: an upstream that sends pages without end gets a
// bounded number of upstream requests and a small 502 with an OCI error
// naming the bound and the setting, nothing stored; a listing that merely
// goes round (empty pages, the same tags under new URLs) ends at once with
// what it gathered. Before the bounds: 100 upstream requests, a 200 with
// every tag gathered, and the whole list stored.
func TestTagListBounds(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	cases := []struct {
		name     string
		pages    testreg.TagPages
		tune     func(*mirror.Options)
		requests int64 // at most
		status   int
		want     string // in the error message, or tags answered
		tags     int
	}{
		{"tags", testreg.TagPages{PerPage: 100}, func(o *mirror.Options) { o.TagListMaxTags = 1000 },
			11, http.StatusBadGateway, "more than 1000 tags)", 0},
		{"bytes", testreg.TagPages{PerPage: 100, TagLen: 128}, func(o *mirror.Options) { o.TagListMaxBytes = 50000 },
			4, http.StatusBadGateway, "more than 50000 bytes)", 0},
		{"pages", testreg.TagPages{PerPage: 1}, nil,
			100, http.StatusBadGateway, "more than 100 pages)", 0},
		{"empty pages", testreg.TagPages{}, nil, 1, http.StatusOK, "", 0},
		{"same tags under new URLs", testreg.TagPages{PerPage: 5, Repeat: true}, nil, 2, http.StatusOK, "", 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{tune: tc.tune}, upstreamSpec{host: "registry.test", reg: reg})
			repo := "bounds/" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			reg.SetTagPages(&tc.pages)
			defer reg.SetTagPages(nil)
			before := reg.Count("GET", testreg.KindTags)
			a := listTags(t, e, repo)
			if n := reg.Count("GET", testreg.KindTags) - before; n > tc.requests {
				t.Errorf("%d upstream tags/list requests, want at most %d", n, tc.requests)
			}
			if a.status != tc.status {
				t.Fatalf("status %d, want %d; %d bytes: %.300s", a.status, tc.status, len(a.body), a.body)
			}
			if tc.status != http.StatusOK {
				wantStatus(t, a.resp, a.body, tc.status, "UNSUPPORTED")
				if !strings.Contains(string(a.body), tc.want) || len(a.body) > 1024 {
					t.Errorf("answer %s (%d bytes), want a short error saying %q", a.body, len(a.body), tc.want)
				}
				if storedTagList(t, e, repo) {
					t.Error("a tag list over the bound was stored")
				}
				return
			}
			if len(a.tags) != tc.tags {
				t.Errorf("%d tags answered, want %d", len(a.tags), tc.tags)
			}
		})
	}
}

// TestTagListLinkLoop: a Link back to a page already fetched ends the
// listing with the tags gathered (1 or 2 upstream requests, not 100); a
// Link to another host is not followed: 502, one request.
func TestTagListLinkLoop(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	cases := []struct {
		name     string
		pages    testreg.TagPages
		requests int64
		status   int
		tags     int
	}{
		{"back to the first page", testreg.TagPages{PerPage: 3, Pages: 2, Link: testreg.LinkFirst}, 2, http.StatusOK, 6},
		{"to itself", testreg.TagPages{PerPage: 3, Link: testreg.LinkSelf}, 1, http.StatusOK, 3},
		{"to another host", testreg.TagPages{PerPage: 3, Link: testreg.LinkOtherHost}, 1, http.StatusBadGateway, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg.SetTagPages(&tc.pages)
			defer reg.SetTagPages(nil)
			before := reg.Count("GET", testreg.KindTags)
			a := listTags(t, e, "loop/"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")))
			if n := reg.Count("GET", testreg.KindTags) - before; n != tc.requests {
				t.Errorf("%d upstream tags/list requests, want %d", n, tc.requests)
			}
			if a.status != tc.status || len(a.tags) != tc.tags {
				t.Fatalf("status %d with %d tags, want %d with %d: %.300s", a.status, len(a.tags), tc.status, tc.tags, a.body)
			}
			if tc.status != http.StatusOK {
				wantStatus(t, a.resp, a.body, tc.status, "UNAVAILABLE")
			}
		})
	}
}

// TestTagListCoalesced: 20 concurrent tags/list requests of one
// repository share one upstream listing (3 pages: 3 upstream requests,
// not 60), and each gets the whole list.
func TestTagListCoalesced(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetTagPages(&testreg.TagPages{PerPage: 10, Pages: 3, Hold: true})
	const clients = 20
	answers := make([]tagsAnswer, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { answers[i] = listTags(t, e, "team/app") })
	}
	// Released once all share one listing, or (without sharing) once all
	// reached upstream.
	deadline := time.Now().Add(30 * time.Second)
	for e.mirror.TagListingsWaiting("registry.test", "team/app") < clients && reg.TagsHeld() < clients {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests share a listing, %d wait upstream; want %d", e.mirror.TagListingsWaiting("registry.test", "team/app"), reg.TagsHeld(), clients)
		}
		time.Sleep(time.Millisecond)
	}
	reg.ReleaseTags()
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusOK || len(a.tags) != 30 {
			t.Fatalf("client %d: status %d, %d tags; want 200 with 30", i, a.status, len(a.tags))
		}
	}
	if n := reg.Count("GET", testreg.KindTags); n != 3 {
		t.Fatalf("%d upstream tags/list requests for %d clients, want 3 (one listing of 3 pages)", n, clients)
	}
}

// TestTagListingsBounded: listings of different repositories share a
// bound (a hostile upstream's pages of up to TagListMaxBytes each cannot
// add up past it): with 12 listings parked upstream, only MaxListings
// reach upstream at once and the others wait for a slot; once upstream
// answers, every client gets its list.
func TestTagListingsBounded(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetTagPages(&testreg.TagPages{PerPage: 10, Pages: 1, Hold: true})
	const clients = mirror.MaxListings + 4
	answers := make([]tagsAnswer, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { answers[i] = listTags(t, e, fmt.Sprintf("team/app%d", i)) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for reg.TagsHeld() < mirror.MaxListings || e.mirror.TagListingsQueued() < clients-mirror.MaxListings {
		if held := reg.TagsHeld(); held > mirror.MaxListings || time.Now().After(deadline) {
			reg.ReleaseTags()
			t.Fatalf("%d listings upstream at once, %d waiting for a slot; want %d and %d", held, e.mirror.TagListingsQueued(), mirror.MaxListings, clients-mirror.MaxListings)
		}
		time.Sleep(time.Millisecond)
	}
	reg.ReleaseTags()
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusOK || len(a.tags) != 10 {
			t.Fatalf("client %d: status %d, %d tags; want 200 with 10", i, a.status, len(a.tags))
		}
	}
}

// TestTagListInCache: a stored tag list is content of the cache: its
// bytes count in the cache's usage, it is evicted under the size bound
// like a blob (then it no longer answers while upstream is down), and a
// list larger than the whole cache is served but not kept.
func TestTagListInCache(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	// One page of 100 tags of 100 characters: about 10.4 KB stored.
	pages := testreg.TagPages{PerPage: 100, TagLen: 100, Pages: 1}
	reg.SetTagPages(&pages)
	body, _, err := storage.EncodeTagList("registry.test", "team/a", listTags(t, newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg}), "team/a").tags)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(body))
	e := newEnv(t, envOptions{lifecycle: true, evict: storage.EvictOptions{MaxSize: size * 3 / 2}}, upstreamSpec{host: "registry.test", reg: reg})
	if a := listTags(t, e, "team/a"); a.status != http.StatusOK || len(a.tags) != 100 {
		t.Fatalf("status %d, %d tags", a.status, len(a.tags))
	}
	if used, n, err := e.life.Usage(t.Context()); err != nil || used != size || n != 1 {
		t.Fatalf("cache usage %d bytes in %d entries (%v), want the tag list's %d bytes in 1", used, n, err, size)
	}
	if a := listTags(t, e, "team/b"); a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
	if used, _, err := e.life.Usage(t.Context()); err != nil || used > size*3/2 {
		t.Fatalf("cache usage %d bytes (%v), over the bound %d", used, err, size*3/2)
	}
	if storedTagList(t, e, "team/a") || !storedTagList(t, e, "team/b") {
		t.Fatalf("stored lists: team/a %v, team/b %v; want the older evicted, the newer kept", storedTagList(t, e, "team/a"), storedTagList(t, e, "team/b"))
	}
	reg.SetFault(testreg.FaultStatus(http.StatusServiceUnavailable))
	if a := listTags(t, e, "team/b"); a.status != http.StatusOK || a.resp.Header.Get("X-Cache") != mirror.CacheStale || len(a.tags) != 100 {
		t.Fatalf("team/b while upstream is down: status %d, X-Cache %q, %d tags; want its stored list", a.status, a.resp.Header.Get("X-Cache"), len(a.tags))
	}
	if a := listTags(t, e, "team/a"); a.status != http.StatusBadGateway {
		t.Fatalf("team/a (evicted) while upstream is down: status %d, want 502", a.status)
	}
	reg.SetFault(testreg.FaultNone)

	small := newEnv(t, envOptions{lifecycle: true, evict: storage.EvictOptions{MaxSize: size / 2}}, upstreamSpec{host: "registry.test", reg: reg})
	if a := listTags(t, small, "team/a"); a.status != http.StatusOK || len(a.tags) != 100 {
		t.Fatalf("status %d, %d tags", a.status, len(a.tags))
	}
	if used, _, _ := small.life.Usage(t.Context()); used != 0 || storedTagList(t, small, "team/a") {
		t.Fatalf("a tag list larger than the cache was kept (usage %d)", used)
	}
}
