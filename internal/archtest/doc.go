// Package archtest holds the test that keeps the package dependency arrows
// of docs/architecture.md ("Packages") pointing the right way.
package archtest
