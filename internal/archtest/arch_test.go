package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gmarcy/container-registry-proxy/"

// allowed lists, per package, the project packages it may import
// (directly or not), from DESIGN.md §2.
var allowed = map[string][]string{
	"oci":           {},
	"config":        {},
	"internal/logx": {},
	"storage":       {"oci"},
	"auth":          {"oci"},
	"upstream":      {"auth", "oci", "internal/logx"},
	"mirror":        {"storage", "oci", "auth", "internal/logx"},
	"shim":          {"oci", "auth", "internal/logx"},
	// internal/metrics implements the observer interfaces that mirror,
	// upstream and shim define, without importing them: only cmd wires it.
	"internal/metrics": {},
}

func TestDependencyDirection(t *testing.T) {
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
					t.Errorf("%s imports %s, which DESIGN.md §2 does not allow", pkg, rel)
				}
			}
		})
	}
}
