package mirror

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestHugeRangeHeadersCostNothing: a client's Range and If-None-Match of
// up to the server's 1 MiB header limit — 79,000 ranges, 500,000 entity
// tags — are read without allocating (the tags were split into a slice:
// 8 MiB for a 1 MiB header), and such a Range is ignored: the whole
// blob, 200, never more than the blob's bytes.
func TestHugeRangeHeadersCostNothing(t *testing.T) {
	// Not parallel: AllocsPerRun counts every goroutine's allocations.
	d := digest.FromString("blob")
	var ranges strings.Builder
	ranges.WriteString("bytes=")
	for i := range 79_000 {
		if i > 0 {
			ranges.WriteByte(',')
		}
		ranges.WriteString("0-9")
	}
	r := httptest.NewRequest(http.MethodGet, "/v2/x/blobs/"+d.String(), nil)
	r.Header.Set("Range", ranges.String())
	r.Header.Set("If-None-Match", strings.Repeat(`"x",`, 250_000))
	var br byteRange
	var err error
	var hit bool
	if n := testing.AllocsPerRun(20, func() {
		hit = notModified(r, d)
		br, err = blobRange(r, d, 1000)
	}); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
	if hit || err != nil || br != whole(1000) {
		t.Fatalf("not modified %v, range %+v, %v; want the whole blob", hit, br, err)
	}
}

// TestOverlongRangeIsIgnored: a Range longer than any single range a
// client writes (maxRangeHeader) is ignored, however it ends.
func TestOverlongRangeIsIgnored(t *testing.T) {
	t.Parallel()
	d := digest.FromString("blob")
	for _, tc := range []struct {
		rng  string
		want byteRange
	}{
		{"bytes=5-14", byteRange{start: 5, end: 15, size: 100, partial: true}},
		{"bytes=" + strings.Repeat("0", maxRangeHeader-len("bytes=5-14")) + "5-14", byteRange{start: 5, end: 15, size: 100, partial: true}},
		{"bytes=" + strings.Repeat("0", maxRangeHeader-len("bytes=5-14")+1) + "5-14", whole(100)},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v2/x/blobs/"+d.String(), nil)
		r.Header.Set("Range", tc.rng)
		if br, err := blobRange(r, d, 100); err != nil || br != tc.want {
			t.Errorf("Range of %d bytes: %+v, %v; want %+v", len(tc.rng), br, err, tc.want)
		}
	}
}
