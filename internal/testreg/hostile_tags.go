package testreg

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// TagLink is what the rel="next" Link of a TagPages page names.
type TagLink int

const (
	// LinkNext names the next page (?page=N+1), until the last one.
	LinkNext TagLink = iota
	// LinkFirst names the next page, except on the last page, which
	// links back to the first (a Link loop).
	LinkFirst
	// LinkSelf makes every page link to itself.
	LinkSelf
	// LinkOtherHost names the next page on another host
	// (https://other.invalid/v2/…).
	LinkOtherHost
)

// TagPages makes tags/list answer made-up pages the way a hostile or
// broken upstream would (SetTagPages): endless pages, Link loops, huge
// pages. Page N is asked for with ?page=N (none: page 1); its tags are
// "pN-I" for I from 0, padded with 'x' to TagLen, so that every page's
// tags are new unless Repeat.
type TagPages struct {
	// PerPage is how many tags each page holds (0: empty pages).
	PerPage int
	// TagLen pads each tag to this many characters (at most 128).
	TagLen int
	// Pages is how many pages there are; 0: endless.
	Pages int
	// Link says where each page's next Link points.
	Link TagLink
	// Repeat makes every page hold page 1's tags (new URLs, no new tag).
	Repeat bool
	// Hold parks every tags/list request (after authentication) until
	// ReleaseTags, so that concurrent listings overlap deterministically.
	Hold bool
}

// SetTagPages switches tags/list of every repository to the made-up
// pages of p (nil: distribution answers again). A hold of an earlier
// setting is released first.
func (r *Registry) SetTagPages(p *TagPages) {
	s := &r.faults
	s.mu.Lock()
	defer s.mu.Unlock()
	releaseTagsLocked(s)
	if p != nil {
		cp := *p
		p = &cp
		if p.Hold {
			s.tagGate = make(chan struct{})
		}
	}
	s.tagPages = p
}

// ReleaseTags lets every held tags/list request go; later ones pass until
// SetTagPages installs another hold.
func (r *Registry) ReleaseTags() {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	releaseTagsLocked(&r.faults)
}

func releaseTagsLocked(s *faultState) {
	if s.tagGate == nil {
		return
	}
	select {
	case <-s.tagGate:
	default:
		close(s.tagGate)
	}
}

// serveTagPages answers a tags/list request from the TagPages in force;
// false when none is (distribution answers).
func (r *Registry) serveTagPages(w http.ResponseWriter, req *http.Request, repo string) bool {
	r.faults.mu.Lock()
	p, gate := r.faults.tagPages, r.faults.tagGate
	r.faults.mu.Unlock()
	if p == nil || req.URL.Path != "/v2/"+repo+"/tags/list" {
		return false
	}
	if p.Hold && gate != nil && !r.holdTags(req, gate) {
		return true
	}
	page, err := strconv.Atoi(req.URL.Query().Get("page"))
	if err != nil || page < 1 {
		page = 1
	}
	src := page
	if p.Repeat {
		src = 1
	}
	tags := make([]string, 0, p.PerPage)
	for i := range p.PerPage {
		tag := fmt.Sprintf("p%d-%d", src, i)
		if pad := min(p.TagLen, 128) - len(tag); pad > 0 {
			tag += strings.Repeat("x", pad)
		}
		tags = append(tags, tag)
	}
	if link := p.link(req, repo, page); link != "" {
		w.Header().Set("Link", link)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	_ = json.NewEncoder(w).Encode(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, tags})
	return true
}

// holdTags waits for gate; false when the client went away or the
// registry closed first.
func (r *Registry) holdTags(req *http.Request, gate chan struct{}) bool {
	r.faults.tagsHeld.Add(1)
	defer r.faults.tagsHeld.Add(-1)
	select {
	case <-gate:
		return true
	case <-req.Context().Done():
	case <-r.closed:
	}
	return false
}

// TagsHeld returns how many tags/list requests wait for ReleaseTags.
func (r *Registry) TagsHeld() int { return int(r.faults.tagsHeld.Load()) }

// link is page's Link header value ("" for none).
func (p *TagPages) link(req *http.Request, repo string, page int) string {
	path := "/v2/" + repo + "/tags/list"
	last := p.Pages > 0 && page >= p.Pages
	switch {
	case p.Link == LinkSelf:
		return "<" + req.URL.RequestURI() + `>; rel="next"`
	case p.Link == LinkFirst && last:
		return "<" + path + `>; rel="next"`
	case last:
		return ""
	case p.Link == LinkOtherHost:
		return fmt.Sprintf(`<https://other.invalid%s?page=%d>; rel="next"`, path, page+1)
	}
	return fmt.Sprintf(`<%s?page=%d>; rel="next"`, path, page+1)
}
