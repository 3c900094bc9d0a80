#!/usr/bin/env bash
# Benchmarks container-registry-proxy against a real upstream (Debian's
# docker-registry, distribution 2.8) and writes docs/benchmarks.md.
#
#   bench/run.sh [--size-mib 256] [--clients 8] [--repeat 3] [--only cold|warm|shim|all]
#                [--warm-rounds 5] [--tls-http1] [--keep]
#
# --only shim runs just the TLS rows: direct downloads from a second
# docker-registry serving TLS, and warm downloads through the proxy's
# CONNECT shim. --tls-http1 makes their clients speak HTTP/1.1 (default h2).
#
# Installs docker-registry with apt-get when missing (needs root or sudo),
# builds the proxy and the benchmark program into a temp dir, runs it, and
# removes everything it started or created on exit, also on error or ^C.
# Takes about 2 minutes on 2 cores with the defaults (the TLS rows about 1 of them),
# plus the builds.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

registry_bin=/usr/bin/docker-registry

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "run.sh: need root (or sudo) to run: $*" >&2
		exit 1
	fi
}

if [ ! -x "$registry_bin" ]; then
	echo "run.sh: installing docker-registry (Debian package)" >&2
	as_root apt-get update -qq
	# No init system here: keep the package's service from being started.
	as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq docker-registry >/dev/null
fi
if ! command -v go >/dev/null; then
	echo "run.sh: the Go toolchain (go) is required" >&2
	exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/crp-bench-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "run.sh: building the proxy and the benchmark" >&2
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then
	commit="$commit+dirty"
fi
go build -ldflags "-X main.Commit=$commit" -o "$work/container-registry-proxy" ./cmd/container-registry-proxy
go build -o "$work/bench" ./bench/cmd/bench

notes=()
if [ -f bench/notes.md ]; then
	notes=(--notes bench/notes.md)
fi

# Not exec: the EXIT trap must still remove $work. ^C reaches bench (same
# process group), which stops its children and removes its temp dir.
"$work/bench" \
	--proxy-bin "$work/container-registry-proxy" \
	--registry-bin "$registry_bin" \
	--out docs/benchmarks.md \
	--command "bench/run.sh${*:+ $*}" \
	"${notes[@]}" \
	"$@"
