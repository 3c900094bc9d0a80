// Package deploytest holds tests, and no code, that keep what ships beside
// the binary true to it: the Containerfile (parsed, since no container
// engine runs in CI), the Kubernetes manifests in deploy/kubernetes, the
// build command the README documents and the configuration reference in
// docs/configuration.md. Each test reads the files from the repository and
// compares them with the code they describe (config.Default, config.Load,
// the environment variables and flags the binary reads), so that none of
// them can drift from it unnoticed.
package deploytest
