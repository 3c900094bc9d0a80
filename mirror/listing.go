package mirror

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// maxTagPages bounds how many upstream pages one tag list may take.
const maxTagPages = 100

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
	ctx := r.Context()
	cache := CachePass
	tags, err := m.fetchTags(ctx, t)
	if err != nil {
		if !oci.IsTemporary(err) {
			return err
		}
		tl, serr := m.store.GetTagList(ctx, t.reg.Namespace, t.repo)
		if serr != nil {
			return err
		}
		logx.From(ctx).WithError(err).Warn("upstream unavailable; serving the last tag list, which may be stale")
		tags, cache = tl.Tags, CacheStale
		w.Header().Set("Warning", staleWarningFor(reasonUnavailable, tl.FetchedAt))
	} else if err := m.store.PutTagList(ctx, t.reg.Namespace, t.repo, storage.TagList{Tags: tags, FetchedAt: m.opts.Now().UTC()}); err != nil {
		logx.From(ctx).WithError(err).Warn("storing tag list")
	}
	name := m.clientName(r, t)
	page := paginate(tags, q.Get("last"), n)
	if n >= 0 && len(page) == n && n > 0 && len(paginate(tags, page[len(page)-1], 1)) > 0 {
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

// paginate returns the sorted tags after last, at most n (-1: all).
func paginate(tags []string, last string, n int) []string {
	sorted := append([]string(nil), tags...)
	sort.Strings(sorted)
	i := 0
	if last != "" {
		i = sort.SearchStrings(sorted, last)
		if i < len(sorted) && sorted[i] == last {
			i++
		}
	}
	out := sorted[i:]
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func (m *Mirror) fetchTags(ctx context.Context, t target) ([]string, error) {
	var all []string
	query := url.Values{}
	for range maxTagPages {
		resp, err := t.reg.Client.Get(ctx, t.repo, "tags/list", query)
		if err != nil {
			return nil, err
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, oci.MaxManifestSize)).Decode(&page)
		link := resp.Header.Get("Link")
		resp.Body.Close()
		if err != nil {
			return nil, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s sent an unreadable tag list", t.reg.Host)
		}
		all = append(all, page.Tags...)
		next := nextLink(link)
		if next == nil {
			return all, nil
		}
		query = next.Query()
	}
	return all, nil
}

// nextLink parses an RFC 5988 Link header's rel="next" URL.
func nextLink(h string) *url.URL {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, `rel="next"`) && !strings.Contains(part, "rel=next") {
			continue
		}
		s, e := strings.IndexByte(part, '<'), strings.IndexByte(part, '>')
		if s < 0 || e < s {
			continue
		}
		if u, err := url.Parse(part[s+1 : e]); err == nil {
			return u
		}
	}
	return nil
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
