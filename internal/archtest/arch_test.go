package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gmarcy/container-registry-proxy/"

// allowed lists, per package, the project packages it may import
// (directly or not): the import arrows of docs/architecture.md,
// "Packages". .golangci.yml's depguard rules hold the direct imports to
// the same table.
var allowed = map[string][]string{
	"oci":             {},
	"config":          {},
	"internal/logx":   {},
	"internal/flight": {},
	"internal/health": {},
	"storage":         {"oci"},
	"auth":            {"oci", "internal/flight"},
	"upstream":        {"auth", "oci", "internal/flight", "internal/logx", "internal/netguard"},
	"cache":           {"storage", "oci"},
	"mirror":          {"storage", "oci", "internal/logx", "internal/flight"},
	"shim":            {"oci", "auth", "internal/flight", "internal/logx", "internal/netguard"},
	"warm":            {"upstream", "auth", "oci", "internal/flight", "internal/logx", "internal/netguard"},
	// internal/metrics implements the observer interfaces that mirror,
	// upstream and shim define, without importing them: only cmd wires it.
	"internal/metrics": {},
	"internal/status":  {"internal/logx"},
	// internal/testutil holds helpers for tests and imports nothing of ours;
	// TestTestHelpersOnlyFromTests keeps it out of every non-test build.
	"internal/testutil": {},
	// internal/testca makes throwaway TLS certificates for testreg and the
	// benchmark: standard library only.
	"internal/testca": {},
	// storage/s3uploads clears the multipart uploads abandoned in an S3
	// bucket, with the SDK of distribution's s3 driver: only the full
	// build imports it (TestLeanBuildWithoutCloudSDKs).
	"storage/s3uploads": {},
	// storage/indextest is storage.Index's contract suite, run by the
	// tests of every implementation; TestTestHelpersOnlyFromTests keeps
	// it out of every non-test build.
	"storage/indextest": {"storage", "oci"},
	// cluster is what the replicas share through Redis: the shared
	// storage.Index, the eviction lease, and the fill coordinator (a
	// mirror.Fetcher); internal/flight comes with mirror.
	"cluster": {"mirror", "storage", "oci", "internal/logx", "internal/flight"},
	// internal/netguard is the address policy of the proxy's own
	// connections and its loop marker: standard library only.
	"internal/netguard": {},
}

// testHelpers are the packages that only _test.go files may import.
var testHelpers = []string{"internal/testutil", "storage/indextest"}

func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	for pkg, ok := range allowed {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", pkg, err)
			}
			okSet := map[string]bool{pkg: true}
			for _, p := range ok {
				okSet[p] = true
			}
			for _, dep := range strings.Fields(string(out)) {
				rel, isOurs := strings.CutPrefix(dep, module)
				if !isOurs {
					continue
				}
				if !okSet[rel] {
					t.Errorf("%s imports %s, which docs/architecture.md (Packages) does not allow", pkg, rel)
				}
			}
		})
	}
}

// TestTestHelpersOnlyFromTests checks that the test helpers
// (testHelpers) are imported only by _test.go files: no package's
// non-test build may depend on them, with or without the e2e build tag.
func TestTestHelpersOnlyFromTests(t *testing.T) {
	t.Parallel()
	for _, tags := range []string{"", "e2e"} {
		t.Run("tags="+tags, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-e", "-tags="+tags,
				"-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"...").Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			for _, helper := range testHelpers {
				onlyFromTests(t, string(out), module+helper)
			}
		})
	}
}

// onlyFromTests fails the test when a package's non-test build depends on
// helper, in the output of go list (a package and its dependencies per
// line).
func onlyFromTests(t *testing.T, list, helper string) {
	t.Helper()
	listed := false
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		listed = listed || f[0] == helper
		for _, dep := range f[1:] {
			if dep == helper {
				t.Errorf("%s imports %s outside its _test.go files", f[0], helper)
			}
		}
	}
	if !listed {
		t.Fatalf("go list did not list %s; output:\n%s", helper, list)
	}
}

// TestLeanBuildWithoutCloudSDKs: the lean build (-tags lean: filesystem
// and inmemory drivers only) links none of the cloud drivers' SDKs, nor
// the packages of ours that use them.
func TestLeanBuildWithoutCloudSDKs(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-tags=lean", module+"cmd/container-registry-proxy").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	banned := []string{module + "storage/s3uploads", "github.com/aws/aws-sdk-go/", "cloud.google.com/go/storage", "github.com/Azure/azure-sdk-for-go/"}
	for _, dep := range strings.Fields(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(dep, b) {
				t.Errorf("the lean build imports %s", dep)
			}
		}
	}
}

// unconstrained are the packages that may import any other: the command
// that wires everything, and test infrastructure.
var unconstrained = map[string]bool{
	"cmd/container-registry-proxy": true,
	"bench/cmd/bench":              true,
	"bench/cmd/load":               true,
	"bench/load":                   true,
	"bench/internal/harness":       true,
	"test/e2e":                     true,
	"internal/testreg":             true,
	"internal/deploytest":          true,
	"internal/archtest":            true,
}

// TestEveryPackageHasArrows: a new package gets its row in allowed (and
// in docs/architecture.md) before it can be imported from anywhere.
func TestEveryPackageHasArrows(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-e", "-tags=e2e", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(p, module)
		if _, ok := allowed[rel]; !ok && !unconstrained[rel] {
			t.Errorf("package %s has no row in allowed: add its import arrows here and in docs/architecture.md", rel)
		}
	}
}
