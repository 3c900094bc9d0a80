package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/internal/flight"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// Defaults of Options.TagListMaxBytes and TagListMaxTags: about four
// times the largest tag lists of public registries, and well within what
// one process can hold for a few listings at once.
const (
	DefaultTagListMaxBytes = 16 << 20
	DefaultTagListMaxTags  = 100000
)

// tagListDefaults sets the defaults of the tag list bounds in opts.
func tagListDefaults(opts *Options) {
	if opts.TagListMaxBytes <= 0 {
		opts.TagListMaxBytes = DefaultTagListMaxBytes
	}
	if opts.TagListMaxTags <= 0 {
		opts.TagListMaxTags = DefaultTagListMaxTags
	}
}

// maxTagPages bounds how many upstream pages one tag list may take.
const maxTagPages = 100

// errTagListBound is the cause of a listing past the proxy's bounds. It
// is answered as an error (502), never with a part of the list nor with
// the stored one, and nothing is stored: a part would be taken for the
// whole list by the tools that pick the newest tag.
var errTagListBound = errors.New("tag list over the proxy's bounds")

// handleTags answers tags/list from upstream (every page, so n and last
// work the same whatever upstream's page size), stores the answer, and
// serves the last stored answer with a Warning when upstream fails.
func (m *Mirror) handleTags(w http.ResponseWriter, r *http.Request) error {
	t, err := m.resolve(r)
	if err != nil {
		return err
	}
	setRoute(r, t, "")
	if r, err = m.authorize(r, t, "tags", ""); err != nil {
		return err
	}
	q := r.URL.Query()
	n := -1
	if s := q.Get("n"); s != "" {
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			return oci.Errorf(http.StatusBadRequest, oci.CodePaginationNumberInv, "invalid n %q", s)
		}
	}
	tags, cache, warning, err := m.tagList(r.Context(), t)
	if err != nil {
		return err
	}
	if warning != "" {
		w.Header().Set("Warning", warning)
	}
	name := m.clientName(r, t)
	page := paginate(tags, q.Get("last"), n)
	if n > 0 && len(page) == n && len(paginate(tags, page[len(page)-1], 1)) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("n", strconv.Itoa(n))
		next.Set("last", page[len(page)-1])
		w.Header().Set("Link", `</v2/`+name+`/tags/list?`+next.Encode()+`>; rel="next"`)
	}
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, page})
	if err != nil {
		return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "encoding the tag list")
	}
	setCache(w, r, cache)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// tagListKey names the shared listing of t's repository.
func tagListKey(t target) string { return "taglist|" + t.reg.Host + "|" + t.repo }

// tagList returns the tags of t's repository, sorted and unique, with the
// cache status and Warning of the answer: from upstream, in one listing
// that concurrent requests for the repository share and that is stored
// once; or, when upstream is unavailable, the stored list, stale.
func (m *Mirror) tagList(ctx context.Context, t target) (tags []string, cache, warning string, err error) {
	tags, err = m.tagLists.Do(ctx, tagListKey(t), func(fctx context.Context) ([]string, error) {
		tags, err := m.fetchTags(fctx, t)
		if err == nil {
			m.storeTagList(fctx, t, tags)
		}
		return tags, err
	})
	switch {
	case err == nil:
		return tags, CachePass, "", nil
	case flight.Left(ctx, err):
		return nil, "", "", clientGone(err)
	case !oci.IsTemporary(err), errors.Is(err, errTagListBound):
		return nil, "", "", err
	}
	tl, serr := m.store.GetTagList(ctx, t.reg.Namespace, t.repo, m.opts.TagListMaxBytes)
	if serr != nil {
		if !errors.Is(serr, storage.ErrNotFound) {
			logx.From(ctx).WithError(serr).Warn("stored tag list unreadable")
		}
		return nil, "", "", err
	}
	if tl.Digest != "" {
		m.opts.Cache.Hit(tl.Digest)
	}
	logx.From(ctx).WithError(err).Warn(staleReason(err) + "; serving the last tag list, which may be stale")
	return uniqueSorted(tl.Tags), CacheStale, staleWarningFor(staleReason(err), tl.FetchedAt), nil
}

// storeTagList keeps tags as t's last tag list, for the answers while
// upstream is unavailable. The list is content of the cache like a blob:
// admitted under its size bound, room made for it, recorded in the index
// (its bytes count toward the bound, and eviction removes it when nobody
// reads it). The list it replaces is never read again, so it is the
// first to go.
func (m *Mirror) storeTagList(ctx context.Context, t target, tags []string) {
	log := logx.From(ctx)
	body, d, err := storage.EncodeTagList(t.reg.Namespace, t.repo, tags)
	if err != nil {
		log.WithError(err).Warn("storing tag list")
		return
	}
	size := int64(len(body))
	if !m.opts.Cache.Admit(size) {
		log.WithField("bytes", size).Info("tag list larger than the cache; served, not stored")
		return
	}
	if _, err := m.store.StatBlob(ctx, d); errors.Is(err, storage.ErrNotFound) {
		if err := m.opts.Cache.Reserve(ctx, size); err != nil {
			log.WithError(err).Warn("making room in the cache")
		}
	}
	if err := m.store.PutTagList(ctx, t.reg.Namespace, t.repo, d, body, m.opts.Now()); err != nil {
		log.WithError(err).Warn("storing tag list")
		return
	}
	if err := m.opts.Cache.Committed(ctx, storage.Content{Digest: d, Size: size, Namespace: t.reg.Namespace, Repo: t.repo}); err != nil {
		log.WithError(err).Warn("storing tag list")
	}
}

// paginate returns the tags after last, at most n (-1: all), from tags
// sorted and unique (shared: it is not modified).
func paginate(tags []string, last string, n int) []string {
	i := 0
	if last != "" {
		i = sort.SearchStrings(tags, last)
		if i < len(tags) && tags[i] == last {
			i++
		}
	}
	out := tags[i:]
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	if len(out) == 0 {
		return []string{}
	}
	return out
}

// uniqueSorted returns a sorted copy of tags without duplicates.
func uniqueSorted(tags []string) []string {
	out := slices.Clone(tags)
	slices.Sort(out)
	return slices.Clip(slices.Compact(out))
}

// tagListing gathers one repository's tags from upstream, page by page,
// within the proxy's bounds: the bytes of all bodies, the tags, the
// pages. It follows a page's rel="next" Link only to a page not fetched
// yet, on the same scheme and host, and only while pages bring new tags:
// a Link loop ends the listing with what was gathered.
type tagListing struct {
	m      *Mirror
	t      target
	budget int64           // body bytes left
	seen   map[string]bool // queries of the pages asked for, normalised
	set    map[string]bool
	tags   []string
	// invalid counts the names that are not tags, dropped.
	invalid int
}

func (m *Mirror) fetchTags(ctx context.Context, t target) ([]string, error) {
	release, err := m.listingSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	l := &tagListing{m: m, t: t, budget: m.opts.TagListMaxBytes, seen: map[string]bool{}, set: map[string]bool{}}
	log := logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo})
	query := url.Values{}
	for {
		key := query.Encode()
		if l.seen[key] {
			log.WithField("pages", len(l.seen)).Warn("upstream's tag list links back to a page already fetched; the listing ends there")
			break
		}
		if len(l.seen) == maxTagPages {
			return nil, l.overBound(fmt.Sprintf("more than %d pages", maxTagPages))
		}
		l.seen[key] = true
		next, added, err := l.page(ctx, query)
		if err != nil {
			return nil, err
		}
		if next == nil {
			break
		}
		if added == 0 {
			log.WithField("pages", len(l.seen)).Warn("upstream's tag list page brought no new tag yet links to another; the listing ends there")
			break
		}
		query = next
	}
	if l.invalid > 0 {
		log.WithField("dropped", l.invalid).Warn("upstream's tag list holds names that are not valid tags; they are left out")
	}
	slices.Sort(l.tags)
	return slices.Clip(l.tags), nil
}

// page fetches one page and adds its tags; it returns the query of the
// next page (nil: none) and how many tags were new.
func (l *tagListing) page(ctx context.Context, query url.Values) (url.Values, int, error) {
	host := l.t.reg.Host
	resp, err := l.t.reg.Client.Get(ctx, l.t.repo, "tags/list", query)
	if err != nil {
		return nil, 0, err
	}
	resp.Body = l.m.fetched(host, resp.Body)
	defer resp.Body.Close()
	if resp.ContentLength > l.budget {
		return nil, 0, l.overBound(fmt.Sprintf("more than %d bytes", l.m.opts.TagListMaxBytes))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, l.budget+1))
	if err != nil {
		var oe *oci.Error
		if errors.As(err, &oe) {
			return nil, 0, err // mapped by the upstream client: timeout, reset …
		}
		return nil, 0, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s: reading the tag list", host)
	}
	if int64(len(b)) > l.budget {
		return nil, 0, l.overBound(fmt.Sprintf("more than %d bytes", l.m.opts.TagListMaxBytes))
	}
	l.budget -= int64(len(b))
	var p struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, 0, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s sent an unreadable tag list", host)
	}
	added := l.add(p.Tags)
	if len(l.tags) > l.m.opts.TagListMaxTags {
		return nil, 0, l.overBound(fmt.Sprintf("more than %d tags", l.m.opts.TagListMaxTags))
	}
	next, err := nextQuery(resp, strings.Join(resp.Header.Values("Link"), ", "))
	if err != nil {
		return nil, 0, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s sent a tag list Link to another host; not followed", host)
	}
	return next, added, nil
}

// add adds the valid tags not seen yet and returns how many.
func (l *tagListing) add(tags []string) int {
	added := 0
	for _, tag := range tags {
		switch {
		case !oci.ValidTag(tag):
			l.invalid++
		case !l.set[tag]:
			l.set[tag] = true
			l.tags = append(l.tags, tag)
			added++
		}
	}
	return added
}

// overBound is the error of a listing past a bound (what says which).
func (l *tagListing) overBound(what string) error {
	return oci.Wrap(http.StatusBadGateway, oci.CodeUnsupported, errTagListBound,
		"the tag list of %s on %s is larger than this proxy serves (%s)", l.t.repo, l.t.reg.Host, what)
}

// maxListings bounds the upstream tag listings running at once, all
// repositories and upstreams together: each may hold up to
// Options.TagListMaxBytes of pages and their tags, so that many listings
// of different repositories of a hostile upstream cannot add up to
// gigabytes. Listings past it wait for a slot (as long as their clients
// wait).
const maxListings = 8

// listingSlot waits for one of the maxListings slots; release frees it.
func (m *Mirror) listingSlot(ctx context.Context) (release func(), err error) {
	select {
	case m.listingSlots <- struct{}{}:
	default:
		m.listingsQueued.Add(1)
		defer m.listingsQueued.Add(-1)
		select {
		case m.listingSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() { <-m.listingSlots }, nil
}

// nextQuery returns the query of the page that link (a Link header value
// of resp) names as rel="next", or nil when there is none. The page is
// always asked for at the repository's own tags/list path on the
// upstream's endpoint; a link to another scheme, host or port is an
// error.
func nextQuery(resp *http.Response, link string) (url.Values, error) {
	u := nextLink(link)
	if u == nil {
		return nil, nil
	}
	if u.IsAbs() || u.Host != "" {
		var base *url.URL
		if resp.Request != nil {
			base = resp.Request.URL
		}
		if base == nil || !sameOrigin(base.ResolveReference(u), base) {
			return nil, fmt.Errorf("link %s://%s is not %s", u.Scheme, u.Host, originOf(base))
		}
	}
	// Malformed pairs are dropped; a query that then repeats one already
	// asked for ends the listing as a loop.
	return u.Query(), nil
}

// sameOrigin reports whether a and b have one scheme, host and port
// (a default port written out or left out is the same).
func sameOrigin(a, b *url.URL) bool {
	return originOf(a) == originOf(b)
}

// originOf is u's scheme://host:port, lower case, with the port.
func originOf(u *url.URL) string {
	if u == nil {
		return "(unknown)"
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// nextLink returns the target of the first rel="next" link of a Link
// header value, or nil when there is none, it does not parse as a URL
// reference, or the value is malformed.
func nextLink(h string) *url.URL {
	target, ok := nextLinkTarget(h)
	if !ok {
		return nil
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil
	}
	return u
}

// nextLinkTarget returns the target (between '<' and '>') of the first
// link-value of h whose rel parameter lists "next" (RFC 8288:
// `<uri>; param=value; rel="next", <uri>; …`, rel being a
// space-separated list of relation types compared without regard to
// case). Reading stops at the first malformed link-value.
func nextLinkTarget(h string) (string, bool) {
	for {
		h = strings.TrimLeft(h, " \t,")
		if h == "" || h[0] != '<' {
			return "", false
		}
		end := strings.IndexByte(h, '>')
		if end < 0 {
			return "", false
		}
		target := h[1:end]
		var params []linkParam
		params, h = linkParams(h[end+1:])
		for _, p := range params {
			if p.name == "rel" && slices.Contains(strings.Fields(strings.ToLower(p.value)), "next") {
				return target, true
			}
		}
	}
}

// linkParam is one parameter of a link-value.
type linkParam struct{ name, value string }

// linkParams reads the parameters of one link-value (`; name=value` or
// `; name="quoted \" value"`) up to the comma that ends it, and returns
// them with the rest of the header.
func linkParams(s string) ([]linkParam, string) {
	var params []linkParam
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] == ',' {
			return params, s
		}
		if s[0] != ';' {
			// Not a parameter: skip to the next link-value.
			i := strings.IndexByte(s, ',')
			if i < 0 {
				return params, ""
			}
			return params, s[i:]
		}
		s = strings.TrimLeft(s[1:], " \t")
		i := strings.IndexAny(s, "=;,")
		if i < 0 || s[i] != '=' {
			if i < 0 {
				i = len(s)
			}
			params = append(params, linkParam{name: strings.ToLower(strings.TrimSpace(s[:i]))})
			s = s[i:]
			continue
		}
		name := strings.ToLower(strings.TrimSpace(s[:i]))
		var value string
		value, s = paramValue(strings.TrimLeft(s[i+1:], " \t"))
		params = append(params, linkParam{name: name, value: value})
	}
}

// paramValue reads a token or a quoted-string at the start of s.
func paramValue(s string) (string, string) {
	if s == "" || s[0] != '"' {
		i := strings.IndexAny(s, ";,")
		if i < 0 {
			i = len(s)
		}
		return strings.TrimSpace(s[:i]), s[i:]
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), ""
}

// clientName is the repository name as the client wrote it, for the tag
// list's name and Link: the route's name (the mirror path, with its
// registry prefix, or ?ns='s), except through the shim. The shim rewrites
// /v2/<repo>/… sent to a registry's own host into /v2/<namespace>/<repo>/…
// and keeps the Host header, which names that registry (a mirror path
// request names the proxy): then the namespace it added is dropped.
func (m *Mirror) clientName(r *http.Request, t target) string {
	if r.URL.Query().Get("ns") != "" {
		return t.name
	}
	first, rest, ok := strings.Cut(t.name, "/")
	if !ok {
		return t.name
	}
	hostReg, ok := m.lookup(r.Host)
	if !ok || hostReg != t.reg.Host {
		return t.name
	}
	if prefix, ok := m.lookup(first); ok && prefix == t.reg.Host {
		return rest
	}
	return t.name
}
