#!/usr/bin/env bash
# The whole test suite: installs the real clients and servers it needs
# (skopeo, podman, containerd, crane, redis-server, versitygw, helm) and the
# linter, checks formatting, vet and golangci-lint (zero findings), runs
# the unit and integration tests with the race detector, every fuzz target
# for FUZZTIME (default 5s here), then the end-to-end tests with real
# clients and replica processes, and the client pulls once more through a
# proxy on S3. Run as root on Debian 12 (CI) or
# with sudo rights for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
gopath="$(go env GOPATH)"
export PATH="$gopath/bin:$PATH"

echo "== gofmt"
unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
go vet -tags e2e ./...
go vet -tags lean ./cmd/...
echo "== golangci-lint (.golangci.yml)"
golangci-lint run --timeout 10m ./...
golangci-lint run --timeout 10m --build-tags e2e ./test/...
echo "== unit and integration tests (race detector)"
go test -race -count=1 -timeout 15m ./...
echo "== fuzzing: every fuzz target for a few seconds (scripts/fuzz.sh)"
FUZZTIME="${FUZZTIME:-5s}" scripts/fuzz.sh
echo "== end-to-end tests with real clients"
go test -tags e2e -count=1 -timeout 20m ./test/e2e/...
echo "== the client pulls again, through a proxy on S3 (versitygw)"
E2E_STORAGE=s3 go test -tags e2e -count=1 -timeout 20m \
	-run 'TestSkopeoMirror|TestPodmanMirror|TestContainerdMirror|TestCrane$|TestMultiArchOffline|TestShimSkopeo|TestShimCrane|TestShimPodman|TestShimContainerd|TestOfflineMirrorAndShim|TestMetricsAfterRealPulls' \
	./test/e2e/...
