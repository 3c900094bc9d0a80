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
	"github.com/gorilla/mux"
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
		w.Header().Set("Warning", staleWarning)
	} else if err := m.store.PutTagList(ctx, t.reg.Namespace, t.repo, storage.TagList{Tags: tags, FetchedAt: m.opts.Now().UTC()}); err != nil {
		logx.From(ctx).WithError(err).Warn("storing tag list")
	}
	page := paginate(tags, q.Get("last"), n)
	if n >= 0 && len(page) == n && n > 0 && len(paginate(tags, page[len(page)-1], 1)) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("n", strconv.Itoa(n))
		next.Set("last", page[len(page)-1])
		w.Header().Set("Link", `</v2/`+t.name+`/tags/list?`+next.Encode()+`>; rel="next"`)
	}
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{t.repo, page})
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

// handleReferrers answers referrers/<digest> from upstream, filtered by
// artifactType when upstream did not filter, and an empty index when
// upstream has no referrers API.
func (m *Mirror) handleReferrers(w http.ResponseWriter, r *http.Request) error {
	t, err := m.resolve(r)
	if err != nil {
		return err
	}
	d, err := oci.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return err
	}
	setRoute(r, t, d.String())
	if r, err = m.authorize(r, t, "referrers", d.String()); err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	q := url.Values{}
	if artifactType != "" {
		q.Set("artifactType", artifactType)
	}
	index := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeOCIIndex, "manifests": []any{}}
	filtered := false
	resp, err := t.reg.Client.Get(r.Context(), t.repo, "referrers/"+d.String(), q)
	switch {
	case err != nil && oci.StatusOf(err) == http.StatusNotFound:
		// No referrers API upstream (or nothing known): an empty index.
	case err != nil:
		return err
	default:
		buf, rerr := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
		filtered = resp.Header.Get("OCI-Filters-Applied") != ""
		resp.Body.Close()
		if rerr != nil || len(buf) > oci.MaxManifestSize {
			return oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "upstream %s sent an unreadable referrers index", t.reg.Host)
		}
		if err := json.Unmarshal(buf, &index); err != nil {
			return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s sent an invalid referrers index", t.reg.Host)
		}
	}
	if artifactType != "" {
		if !filtered {
			index["manifests"] = filterArtifactType(index["manifests"], artifactType)
		}
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, err := json.Marshal(index)
	if err != nil {
		return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "encoding the referrers index")
	}
	setCache(w, r, CachePass)
	w.Header().Set("Content-Type", oci.MediaTypeOCIIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

func filterArtifactType(manifests any, artifactType string) []any {
	list, _ := manifests.([]any)
	out := []any{}
	for _, e := range list {
		if mm, ok := e.(map[string]any); ok && mm["artifactType"] == artifactType {
			out = append(out, e)
		}
	}
	return out
}
