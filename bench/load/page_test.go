package load

import (
	"strings"
	"testing"
)

// TestSplice: the section goes before the benchmark page's Notes, replaces
// itself on the next run, and survives a page rewritten around it.
func TestSplice(t *testing.T) {
	t.Parallel()
	page := "# Benchmarks\n\n## Results\n\nrows\n\n## Notes\n\n- n\n\n## Analysis\n\ntext\n"
	once := Splice(page, "## Load\n\nfirst run\n")
	if !strings.Contains(once, "rows\n\n"+sectionBegin+"\n\n## Load\n\nfirst run\n\n"+sectionEnd+"\n\n## Notes") {
		t.Fatalf("first splice:\n%s", once)
	}
	twice := Splice(once, "## Load\n\nsecond run")
	if strings.Contains(twice, "first run") || strings.Count(twice, sectionBegin) != 1 || !strings.Contains(twice, "second run") {
		t.Fatalf("second splice:\n%s", twice)
	}
	// The full benchmark rewrites the page and puts the old block back.
	rewritten := SpliceBlock(page, Section(twice))
	if Section(rewritten) != Section(twice) || !strings.HasSuffix(rewritten, "## Analysis\n\ntext\n") {
		t.Fatalf("kept block:\n%s", rewritten)
	}
	if got := Splice("", "## Load"); got != sectionBegin+"\n\n## Load\n\n"+sectionEnd+"\n" {
		t.Fatalf("empty page: %q", got)
	}
	if Section("no markers") != "" || Section(sectionBegin+" but no end") != "" {
		t.Fatal("Section of a page without a whole block")
	}
}
