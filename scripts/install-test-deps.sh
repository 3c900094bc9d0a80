#!/usr/bin/env bash
# Installs the real clients the end-to-end tests drive: skopeo, podman,
# containerd (with ctr), shellcheck, chromium (the status page test),
# redis-server (the replicas' shared state), docker-registry
# (distribution 2.8, an upstream without the referrers API) and strace (the
# crash tests' kill points) from Debian;
# crane, oras (the referrers tests), versitygw (a real S3 server for the
# storage and replica tests) and helm (the chart's rendering test) via
# `go install`; and the linter scripts/test.sh
# runs (golangci-lint, the version .golangci.yml is written for).
# Idempotent; meant for root on Debian 12. apt-get update runs only when a
# package is missing.
set -euo pipefail

CRANE_VERSION="${CRANE_VERSION:-v0.22.1}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
ORAS_VERSION="${ORAS_VERSION:-v1.3.6}"

missing=()
for pkg in skopeo podman containerd shellcheck chromium redis-server docker-registry strace; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} > 0)); then
	echo "installing: ${missing[*]}"
	sudo_cmd=()
	if [[ $(id -u) -ne 0 ]]; then
		sudo_cmd=(sudo)
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo_cmd[@]}" apt-get update -qq
	"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

gobin="$(go env GOPATH)/bin"
have="$("$gobin/crane" version 2>/dev/null || true)"
if [[ "v${have#v}" != "$CRANE_VERSION" ]]; then
	echo "installing crane ${CRANE_VERSION}"
	GOBIN="$gobin" go install "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}"
fi

have="$("$gobin/golangci-lint" version --short 2>/dev/null || true)"
if [[ "v${have#v}" != "$GOLANGCI_LINT_VERSION" ]]; then
	echo "installing golangci-lint ${GOLANGCI_LINT_VERSION}"
	GOBIN="$gobin" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}"
fi

# versitygw built by go install says "Version: git"; its module version is
# in the binary's build information.
have="$(go version -m "$gobin/versitygw" 2>/dev/null | awk '$1 == "mod" { print $3 }' || true)"
if [[ "$have" != "$VERSITYGW_VERSION" ]]; then
	echo "installing versitygw ${VERSITYGW_VERSION}"
	GOBIN="$gobin" go install "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}"
fi

# helm built by go install reports a short version; its module version is
# in the binary's build information.
have="$(go version -m "$gobin/helm" 2>/dev/null | awk '$1 == "mod" { print $3 }' || true)"
if [[ "$have" != "$HELM_VERSION" ]]; then
	echo "installing helm ${HELM_VERSION}"
	GOBIN="$gobin" go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
fi

# oras built by go install reports no version of its own; its module
# version is in the binary's build information.
have="$(go version -m "$gobin/oras" 2>/dev/null | awk '$1 == "mod" { print $3 }' || true)"
if [[ "$have" != "$ORAS_VERSION" ]]; then
	echo "installing oras ${ORAS_VERSION}"
	GOBIN="$gobin" go install "oras.land/oras/cmd/oras@${ORAS_VERSION}"
fi

echo "skopeo:     $(skopeo --version)"
echo "podman:     $(podman --version)"
echo "containerd: $(containerd --version)"
echo "ctr:        $(ctr --version)"
echo "chromium:   $(chromium --version 2>/dev/null || echo missing)"
echo "crane:      $("$gobin/crane" version) ($gobin/crane)"
echo "redis:      $(redis-server --version)"
echo "versitygw:  $(go version -m "$gobin/versitygw" | awk '$1 == "mod" { print $3 }') ($gobin/versitygw)"
echo "helm:       $("$gobin/helm" version --short) ($gobin/helm)"
echo "oras:       $(go version -m "$gobin/oras" | awk '$1 == "mod" { print $3 }') ($gobin/oras)"
echo "registry:   $(docker-registry --version)"
echo "lint:       $("$gobin/golangci-lint" version --short) ($gobin/golangci-lint)"
