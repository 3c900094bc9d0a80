package deploytest

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// linkedDocs are the pages whose links TestDocLinks follows.
var linkedDocs = []string{
	"README.md",
	"docs/quick-start.md",
	"docs/configuration.md",
	"docs/clients.md",
	"docs/kubernetes.md",
	"docs/troubleshooting.md",
	"docs/security.md",
	"docs/reliability.md",
}

var (
	mdLinkRe  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRe = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
	fenceRe   = regexp.MustCompile("(?ms)^```.*?^```")
)

// anchor is GitHub's id for a heading: lower case, punctuation other than
// '-' and '_' dropped, spaces turned into '-'.
func anchor(heading string) string {
	heading = strings.ReplaceAll(heading, "`", "")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocLinks: relative links of the README and the user documentation
// point at files of the repository, and #anchors at headings there.
func TestDocLinks(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	for _, doc := range linkedDocs {
		text := fenceRe.ReplaceAllString(readRepoFile(t, doc), "")
		for _, m := range mdLinkRe.FindAllStringSubmatch(text, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(link, "#")
			target := doc
			if file != "" {
				target = path.Join(path.Dir(doc), file)
			}
			data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(target)))
			if err != nil {
				if fi, serr := os.Stat(filepath.Join(root, filepath.FromSlash(target))); serr == nil && fi.IsDir() {
					continue
				}
				t.Errorf("%s: link %s: %s does not exist", doc, link, target)
				continue
			}
			if frag == "" {
				continue
			}
			found := false
			for _, h := range headingRe.FindAllStringSubmatch(fenceRe.ReplaceAllString(string(data), ""), -1) {
				found = found || anchor(h[1]) == frag
			}
			if !found {
				t.Errorf("%s: link %s: %s has no heading #%s", doc, link, target, frag)
			}
		}
	}
}
