// Package archtest holds the test that keeps the package dependency arrows
// of DESIGN.md §2 pointing the right way.
package archtest
