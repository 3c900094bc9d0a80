// Package flight runs work that concurrent requests share (a token fetch,
// a credential helper run, an access check upstream, a manifest or tag
// lookup) once per key, on a context of its own, and lets every caller
// wait on its own request's context (docs/architecture.md, "Shared work").
//
// The leader hanging up does not fail the others: the work runs detached
// from every caller, bounded by the group's timeout. A waiter hanging up
// leaves at once; the work goes on for the others.
package flight
