package mirror

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// FuzzBlobRange: whatever Range and If-Range a client sends, the answer
// is the whole blob, a range inside it, or 416 RANGE_INVALID; never a
// range outside the blob or an empty partial answer.
func FuzzBlobRange(f *testing.F) {
	for _, seed := range []struct {
		rng, ifRange string
		size         int64
	}{
		{"bytes=5-14", "", 100}, {"bytes=-7", "", 100}, {"bytes=90-", "", 100}, {"bytes=5-3", "", 100},
		{"bytes=0-1,5-6", "", 100}, {"bytes=-0", "", 100}, {"bytes=100-", "", 100}, {"bytes=0-", "", 0},
		{"bytes=abc", "", 10}, {"items=0-1", "", 10}, {"bytes= 3 - 4 ", "", 10}, {"bytes=-99999999999999999999", "", 10},
		{"bytes=5-14", `"sha256:other"`, 100}, {"bytes=9223372036854775807-", "", 1 << 62},
		{"bytes=0-99,0-99,0-99,0-99", "", 100}, {"bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7", "", 10},
		{"bytes=5-14" + strings.Repeat(" ", 200), "", 100}, {"bytes=" + strings.Repeat("0", 200) + "1-2", "", 100},
		{"bytes=-9223372036854775808", "", 100}, {"bytes=1-2", `W/"sha256:` + strings.Repeat("a", 64) + `"`, 100},
	} {
		f.Add(seed.rng, seed.ifRange, seed.size)
	}
	d := digest.FromString("blob")
	f.Fuzz(func(t *testing.T, rng, ifRange string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		r := httptest.NewRequest(http.MethodGet, "/v2/x/blobs/"+d.String(), nil)
		r.Header["Range"] = []string{rng}
		if ifRange != "" {
			r.Header["If-Range"] = []string{ifRange}
		}
		br, err := blobRange(r, d, size)
		if err != nil {
			if oci.StatusOf(err) != http.StatusRequestedRangeNotSatisfiable || oci.CodeOf(err) != oci.CodeRangeInvalid {
				t.Fatalf("Range %q, size %d: %v", rng, size, err)
			}
			return
		}
		if br.size != size || br.start < 0 || br.end > size || br.start > br.end {
			t.Fatalf("Range %q, size %d: [%d, %d) of %d", rng, size, br.start, br.end, br.size)
		}
		if br.partial && br.start == br.end {
			t.Fatalf("Range %q, size %d: an empty partial answer", rng, size)
		}
		if !br.partial && (br.start != 0 || br.end != size) {
			t.Fatalf("Range %q, size %d: not partial, yet [%d, %d)", rng, size, br.start, br.end)
		}
		if br.partial && (len(rng) > maxRangeHeader || strings.Contains(rng, ",")) {
			t.Fatalf("Range %q, size %d: an overlong or multi-range header was answered with a part", rng, size)
		}
	})
}
