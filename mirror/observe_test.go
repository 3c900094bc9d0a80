package mirror_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// recorder is an Observer that adds everything up.
type recorder struct {
	mu         sync.Mutex
	answers    map[string]int   // "kind cache" → requests
	bytes      map[string]int64 // "kind cache" → body bytes
	fetched    int64
	started    int
	ended      int
	mismatches int
	postponed  int
	throttled  int
}

func newRecorder() *recorder {
	return &recorder{answers: map[string]int{}, bytes: map[string]int64{}}
}

func (r *recorder) Answered(upstream, kind, cache string, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[kind+" "+cache]++
	r.bytes[kind+" "+cache] += bytes
}

func (r *recorder) Fetched(_ string, n int64) { r.mu.Lock(); r.fetched += n; r.mu.Unlock() }
func (r *recorder) FillStarted(string)        { r.mu.Lock(); r.started++; r.mu.Unlock() }
func (r *recorder) FillEnded(string, time.Duration) {
	r.mu.Lock()
	r.ended++
	r.mu.Unlock()
}
func (r *recorder) DigestMismatch(string) { r.mu.Lock(); r.mismatches++; r.mu.Unlock() }
func (r *recorder) Postponed(string)      { r.mu.Lock(); r.postponed++; r.mu.Unlock() }
func (r *recorder) Throttled(string)      { r.mu.Lock(); r.throttled++; r.mu.Unlock() }

// settle waits until every handler and fill of e has finished, so that
// everything they report has been recorded.
func (e *env) settle() {
	e.t.Helper()
	e.srv.Close()
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	if err := e.mirror.Drain(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func TestObserverSeesAnswersFillsAndBytes(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 200_000), testreg.RandomLayer(t, 3_000))
	bad := reg.PushBlob(t, "team/app", testreg.RandomLayer(t, 5_000))
	rec := newRecorder()
	e := newEnv(t, envOptions{backend: "filesystem", observer: rec}, upstreamSpec{host: "registry.test", reg: reg})
	base := "/v2/registry.test/team/app"
	blobs := append([]testreg.Blob{img.Config}, img.Layers...)
	var blobBytes int64
	for _, b := range blobs {
		blobBytes += int64(len(b.Bytes))
	}
	mlen := int64(len(img.Manifest))

	for range 2 { // cold, then warm
		e.do("GET", base+"/manifests/v1", "Accept", accept)
		for _, b := range blobs {
			e.do("GET", base+"/blobs/"+b.Digest.String())
		}
	}
	e.do("GET", base+"/manifests/"+img.ManifestDigest.String(), "Accept", accept)
	e.do("HEAD", base+"/blobs/"+img.Config.Digest.String())
	e.do("GET", base+"/blobs/"+img.Layers[0].Digest.String(), "Range", "bytes=10-19")
	resp, _ := e.do("GET", base+"/manifests/nope", "Accept", accept) // an error is no answer
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown tag: %d", resp.StatusCode)
	}
	reg.SetFault(testreg.FaultWrongBytes)
	reg.ResetCounts()
	if _, _, err := e.try("GET", base+"/blobs/"+bad.Digest.String()); err == nil {
		t.Fatal("a blob that does not match its digest was served in full")
	}
	e.settle()
	// The client may retry a GET that was cut before its first byte: each
	// attempt is a fill of its own.
	attempts := int(reg.Count("GET", "blob"))
	if attempts < 1 {
		t.Fatal("the corrupt blob was never fetched")
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	wantAnswers := map[string]int{
		"tag miss": 1, "tag revalidated": 1, "manifest hit": 1,
		"blob miss": 3 + attempts, // and each corrupt answer that began
		"blob hit":  5,            // 3 blobs, the HEAD and the range
	}
	wantBytes := map[string]int64{
		"tag miss": mlen, "tag revalidated": mlen, "manifest hit": mlen,
		"blob hit": blobBytes + 10,
	}
	for k, n := range wantAnswers {
		if rec.answers[k] != n {
			t.Errorf("answers[%s] = %d, want %d (all: %v)", k, rec.answers[k], n, rec.answers)
		}
	}
	if len(rec.answers) != len(wantAnswers) {
		t.Errorf("answers %v, want %v", rec.answers, wantAnswers)
	}
	for k, n := range wantBytes {
		if rec.bytes[k] != n {
			t.Errorf("bytes[%s] = %d, want %d", k, rec.bytes[k], n)
		}
	}
	// A corrupt answer always stops short of its last byte.
	if got := rec.bytes["blob miss"] - blobBytes; got < 0 || got > int64(attempts)*int64(len(bad.Bytes)-1) {
		t.Errorf("bytes[blob miss] = %d: %d for the corrupt blob", rec.bytes["blob miss"], got)
	}
	if want := mlen + blobBytes + int64(attempts*len(bad.Bytes)); rec.fetched != want {
		t.Errorf("fetched %d bytes, want %d", rec.fetched, want)
	}
	if rec.started != 3+attempts || rec.ended != 3+attempts || rec.mismatches != attempts || rec.postponed != 0 {
		t.Errorf("fills started %d ended %d, mismatches %d, postponed %d; want %d, %d, %d, 0",
			rec.started, rec.ended, rec.mismatches, rec.postponed, 3+attempts, 3+attempts, attempts)
	}
}

func TestRateLimitPostponesTagRevalidation(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	remaining := "50;w=3600"
	setRemaining := func(v string) { mu.Lock(); remaining = v; mu.Unlock() }
	reg := testreg.Start(t, testreg.Options{TLS: true, Headers: func() http.Header {
		mu.Lock()
		defer mu.Unlock()
		return http.Header{"Ratelimit-Limit": {"100;w=3600"}, "Ratelimit-Remaining": {remaining}}
	}})
	img := reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	img2 := reg.PushImage(t, "app", "v2", testreg.RandomLayer(t, 1000))
	reg.PushImage(t, "app", "v3", testreg.RandomLayer(t, 1000))
	rec := newRecorder()
	e := newEnv(t, envOptions{observer: rec, minRemaining: 10}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/"
	warnings := func() int { return strings.Count(e.logs.String(), "rate limit nearly used up") }

	steps := []struct {
		name      string
		remaining string        // header upstream sends from this step on ("" unchanged)
		advance   time.Duration // clock moves before the request
		tag       string
		cache     string
		upstream  int // upstream requests the step makes
		warnings  int // rate-limit warnings logged so far
	}{
		{name: "cold", tag: "v1", cache: "MISS", upstream: 1},
		{name: "headroom", tag: "v1", cache: "REVALIDATED", upstream: 1},
		{name: "low count seen", remaining: "5;w=3600", tag: "v1", cache: "REVALIDATED", upstream: 1},
		{name: "postponed", tag: "v1", cache: "STALE", warnings: 1},
		{name: "still postponed", advance: 59 * time.Minute, tag: "v1", cache: "STALE", warnings: 1},
		{name: "a miss still asks", tag: "v2", cache: "MISS", upstream: 1, warnings: 1},
		{name: "window over", advance: 2 * time.Minute, tag: "v1", cache: "REVALIDATED", upstream: 1, warnings: 1},
		{name: "new window", tag: "v1", cache: "STALE", warnings: 2},
		{name: "cached tags wait", tag: "v2", cache: "STALE", warnings: 2},
		{name: "a miss sees headroom", remaining: "90;w=3600", tag: "v3", cache: "MISS", upstream: 1, warnings: 2},
		{name: "not postponed", tag: "v1", cache: "REVALIDATED", upstream: 1, warnings: 2},
	}
	for _, s := range steps {
		if s.remaining != "" {
			setRemaining(s.remaining)
		}
		e.clock.Advance(s.advance)
		before := len(reg.Requests())
		resp, body := e.do("GET", path+s.tag, "Accept", accept)
		wantStatus(t, resp, body, 200, "")
		if got := resp.Header.Get("X-Cache"); got != s.cache {
			t.Fatalf("%s: X-Cache %q, want %s", s.name, got, s.cache)
		}
		if n := len(reg.Requests()) - before; n != s.upstream {
			t.Fatalf("%s: %d upstream requests, want %d", s.name, n, s.upstream)
		}
		if w := resp.Header.Get("Warning"); (s.cache == "STALE") != strings.Contains(w, "rate limit") {
			t.Fatalf("%s: Warning %q", s.name, w)
		}
		if n := warnings(); n != s.warnings {
			t.Fatalf("%s: %d rate-limit warnings logged, want %d", s.name, n, s.warnings)
		}
	}
	e.settle()
	if rec.postponed != 4 {
		t.Fatalf("postponed %d, want 4", rec.postponed)
	}
	if rec.answers["tag stale"] != 4 || rec.bytes["tag stale"] != int64(3*len(img.Manifest)+len(img2.Manifest)) {
		t.Fatalf("stale answers %d, %d bytes", rec.answers["tag stale"], rec.bytes["tag stale"])
	}
}
