package load

import "strings"

// The load section sits between these markers in docs/benchmarks.md, so
// that bench/run.sh --only load replaces it and the full bench/run.sh,
// which rewrites the rest of the page, keeps it.
const (
	sectionBegin = "<!-- load:begin (bench/run.sh --only load writes this section) -->"
	sectionEnd   = "<!-- load:end -->"
)

// Section returns the load section of page, markers included, or "".
func Section(page string) string {
	i := strings.Index(page, sectionBegin)
	if i < 0 {
		return ""
	}
	j := strings.Index(page[i:], sectionEnd)
	if j < 0 {
		return ""
	}
	return page[i:i+j+len(sectionEnd)] + "\n"
}

// Splice puts section (Markdown, without markers) into page between the
// markers: in place of the previous one, or before the "## Notes" (or
// "## Analysis") heading of the benchmark's page, or at the end.
func Splice(page, section string) string {
	block := sectionBegin + "\n\n" + strings.TrimSpace(section) + "\n\n" + sectionEnd + "\n"
	return SpliceBlock(page, block)
}

// SpliceBlock is Splice with a block that has its markers (from Section).
func SpliceBlock(page, block string) string {
	if old := Section(page); old != "" {
		return strings.Replace(page, old, block, 1)
	}
	for _, h := range []string{"\n## Notes\n", "\n## Analysis\n"} {
		if i := strings.Index(page, h); i >= 0 {
			return page[:i+1] + block + "\n" + page[i+1:]
		}
	}
	if page != "" && !strings.HasSuffix(page, "\n") {
		page += "\n"
	}
	if page != "" {
		page += "\n"
	}
	return page + block
}
