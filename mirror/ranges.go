package mirror

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// byteRange is the part of a blob a request gets: bytes [start, end) of a
// blob of size bytes; partial when a Range applies (206).
type byteRange struct {
	start, end, size int64
	partial          bool
}

// maxRangeHeader bounds the Range header the proxy reads: the longest
// single range a client writes ("bytes=" and two 19-digit offsets) with
// room to spare. A longer one is ignored like a multi-range.
const maxRangeHeader = 128

// whole is the answer without a Range: every byte, 200.
func whole(size int64) byteRange { return byteRange{start: 0, end: size, size: size} }

// blobRange decides the part of a blob of size bytes that r gets. It is
// the one implementation for stored blobs and fills alike, so that the
// same request gets the same answer whether the blob is stored or still
// arriving (docs/architecture.md, "The fill"):
//
//   - no Range, a Range that is not "bytes=", malformed, invalid
//     (bytes=5-3), longer than maxRangeHeader, multi-range (bytes=0-1,5-6:
//     registry clients never ask for several; answering one body is what
//     RFC 9110 §14.2 allows, and it is nginx's max_ranges 1, so no number
//     of ranges, overlapping or not, makes an answer larger than the
//     blob), or an If-Range that does not name this blob: the whole blob,
//     200;
//   - bytes=a-b, a- or -n that overlaps the blob: 206 with Content-Range,
//     b and n clamped to the blob;
//   - a first byte at or past the end (bytes=N- for a blob of N bytes),
//     bytes=-0, or any range of an empty blob: 416 RANGE_INVALID.
func blobRange(r *http.Request, d digest.Digest, size int64) (byteRange, error) {
	h := r.Header.Get("Range")
	if h == "" || len(h) > maxRangeHeader {
		return whole(size), nil
	}
	if ir := r.Header.Get("If-Range"); ir != "" && !isETagOf(ir, d) {
		return whole(size), nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Count(spec, ",") > 0 {
		return whole(size), nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return whole(size), nil
	}
	unsatisfiable := &oci.Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: oci.CodeRangeInvalid,
		Message: "range " + h + " not satisfiable for a blob of " + strconv.FormatInt(size, 10) + " bytes"}
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		switch {
		case err != nil || n < 0:
			return whole(size), nil
		case n == 0 || size == 0:
			return byteRange{size: size}, unsatisfiable
		}
		return byteRange{start: max(size-n, 0), end: size, size: size, partial: true}, nil
	}
	s, err := strconv.ParseInt(first, 10, 64)
	if err != nil || s < 0 {
		return whole(size), nil
	}
	e := size - 1
	if last != "" {
		if e, err = strconv.ParseInt(last, 10, 64); err != nil || e < s {
			return whole(size), nil
		}
	}
	if s >= size {
		return byteRange{size: size}, unsatisfiable
	}
	return byteRange{start: s, end: min(e, size-1) + 1, size: size, partial: true}, nil
}

// etagOf is a blob's entity tag: its digest, quoted.
func etagOf(d digest.Digest) string { return `"` + d.String() + `"` }

// notModified reports whether r's If-None-Match names blob d (or "*"):
// the client has it, and the answer is 304 without a body. It allocates
// nothing, whatever the header's length.
func notModified(r *http.Request, d digest.Digest) bool {
	inm := r.Header.Get("If-None-Match")
	if inm == "" {
		return false
	}
	for tag := range strings.SplitSeq(inm, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || isETagOf(tag, d) {
			return true
		}
	}
	return false
}

// isETagOf reports whether tag is etagOf(d), without building it.
func isETagOf(tag string, d digest.Digest) bool {
	inner, ok := strings.CutPrefix(tag, `"`)
	inner, ok2 := strings.CutSuffix(inner, `"`)
	return ok && ok2 && inner == d.String()
}

// writeBlobHead writes the headers of the answer to a blob request: the
// blob's own, Content-Length and Content-Range for br, the cache status,
// and the status line (200, 206, or 304 when the client has the blob). It
// reports whether a body follows.
func writeBlobHead(w http.ResponseWriter, r *http.Request, d digest.Digest, br byteRange, known bool, cache string) bool {
	h := w.Header()
	h.Set("Content-Type", oci.MediaTypeOctetStream)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", etagOf(d))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "max-age=31536000")
	setCache(w, r, cache)
	if notModified(r, d) {
		w.WriteHeader(http.StatusNotModified)
		return false
	}
	status := http.StatusOK
	if known {
		h.Set("Content-Length", strconv.FormatInt(br.end-br.start, 10))
		if br.partial {
			h.Set("Content-Range", "bytes "+strconv.FormatInt(br.start, 10)+"-"+strconv.FormatInt(br.end-1, 10)+"/"+strconv.FormatInt(br.size, 10))
			status = http.StatusPartialContent
		}
	}
	w.WriteHeader(status)
	return r.Method != http.MethodHead
}

// rangeError answers a Range that cannot be satisfied: 416 with the
// blob's size in Content-Range.
func rangeError(w http.ResponseWriter, size int64, err error) error {
	w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
	return err
}
