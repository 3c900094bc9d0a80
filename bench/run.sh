#!/usr/bin/env bash
# Benchmarks container-registry-proxy side by side with its peers, in one
# run on this machine, against one upstream (Debian's docker-registry,
# distribution 2.8): distribution 2.8 as a pull-through proxy, nginx with
# proxy_cache + proxy_cache_lock, nginx serving the blob files with
# sendfile, and direct downloads over HTTP and TLS; and ours on S3
# (versitygw) with Redis: 1 and 3 replicas, redirects on and off. Prints
# the tables and writes docs/benchmarks.md and the charts in docs/img/.
#
#   bench/run.sh [flags]
#
# Common flags (bench/run.sh --help lists them all):
#   --only cold,image,scaling,warm,tls,manifest,memory,replicas   run a subset
#   --only load [--duration 60s] [--clients 1000]   the load generator
#                              (bench/cmd/load) alone: 1,000 keep-alive
#                              clients on warm content; writes its section
#                              into docs/benchmarks.md (bench/cmd/load
#                              -help lists its flags; about 1.5 minutes)
#   --systems direct,ours,distribution,nginx,nginx-static
#   --size-mib 256 --clients 8 --warm-clients 8,64 --scaling-mib 16,256,1024
#   --layers 20 --layer-mib 4 --mem-clients 100 --manifest-clients 100
#   --hit-kib 4,1024 --hit-requests 200      (replicas: blob hit latency rows)
#   --repeat 3 --tls-http1 --keep
#   --client splice|copy       plain-HTTP blob bodies: spliced to /dev/null
#                              (default; zero-copy, so the clients leave the
#                              CPUs to the servers) or read like curl
#   PROXY_TAGS= bench/run.sh   measure the full build, not the image's lean
#                              entrypoint (-tags lean, the default)
#   --out FILE --img-dir DIR   write elsewhere (a subset run rewrites
#                              docs/benchmarks.md with the subset otherwise)
#
# Installs docker-registry, nginx, redis-server and gnuplot-nox with
# apt-get when missing (needs root or sudo); the replicas group also needs
# versitygw (scripts/install-test-deps.sh installs it in GOPATH/bin).
# Builds the proxy from the working tree (the lean build and the full one
# beside it, as in the container image) and the benchmark program into a
# temp dir, runs it, and removes everything it started or created on exit,
# also on error or ^C. About 6 minutes on 2 cores with the defaults (under
# 12 on a busy machine; --only replicas about 2), plus the builds.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# --only load: the load generator (bench/cmd/load), on its own. It needs
# none of the peers: it runs its upstream (distribution v3) in process and
# starts the proxy built from the working tree (the lean build, as in the
# image); it writes its section into docs/benchmarks.md.
only=""
prev=""
for a in "$@"; do
	case "$a" in
	--only=*) only="${a#--only=}" ;;
	*) [ "$prev" = --only ] && only="$a" ;;
	esac
	prev="$a"
done
if [[ ",$only," == *,load,* ]]; then
	if [ "$only" != load ]; then
		echo "run.sh: --only load runs on its own (not with other groups)" >&2
		exit 2
	fi
	args=()
	skip=""
	for a in "$@"; do
		if [ -n "$skip" ]; then
			skip=""
			continue
		fi
		case "$a" in
		--only) skip=1 ;;
		--only=*) ;;
		*) args+=("$a") ;;
		esac
	done
	work="$(mktemp -d "${TMPDIR:-/tmp}/crp-load-build.XXXXXX")"
	trap 'rm -rf "$work"' EXIT
	commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	if [ "$commit" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then
		commit="$commit+dirty"
	fi
	echo "run.sh: building the proxy (lean) and the load generator" >&2
	go build -tags "${PROXY_TAGS-lean}" -ldflags "-X main.Commit=$commit" -o "$work/container-registry-proxy" ./cmd/container-registry-proxy
	go build -o "$work/load" ./bench/cmd/load
	# Not exec: the EXIT trap must still remove $work. Flags given to
	# run.sh come last and override these.
	"$work/load" --proxy-bin "$work/container-registry-proxy" --page docs/benchmarks.md \
		--command "bench/run.sh $*" "${args[@]}"
	exit
fi

registry_bin=/usr/bin/docker-registry
nginx_bin=/usr/sbin/nginx

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

missing=()
[ -x "$registry_bin" ] || missing+=(docker-registry)
[ -x "$nginx_bin" ] || missing+=(nginx)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "run.sh: installing ${missing[*]} (Debian packages)" >&2
	as_root apt-get update -qq
	# RUNLEVEL=1: keep the packages' services from being started; the
	# benchmark starts its own instances on loopback.
	as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" >/dev/null
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
# The container image's entrypoint is the lean build (filesystem and
# inmemory storage drivers; s3, gcs and azure run the full build beside
# it, container-registry-proxy-full): that is what the benchmark
# measures, and the replicas group's S3 rows run the full build through
# it. PROXY_TAGS= bench/run.sh measures the full build everywhere.
proxy_tags="${PROXY_TAGS-lean}"
# The tree may be mid-change (other work in progress): retry a failed
# build a few times before giving up.
for try in 1 2 3 4; do
	if go build -tags "$proxy_tags" -ldflags "-X main.Commit=$commit" -o "$work/container-registry-proxy" ./cmd/container-registry-proxy &&
		go build -ldflags "-X main.Commit=$commit" -o "$work/container-registry-proxy-full" ./cmd/container-registry-proxy; then
		break
	fi
	if [ "$try" -eq 4 ]; then
		echo "run.sh: the proxy does not build" >&2
		exit 1
	fi
	echo "run.sh: build failed; retrying in 20s ($try/3)" >&2
	sleep 20
done
go build -o "$work/bench" ./bench/cmd/bench

notes=()
if [ -f bench/notes.md ]; then
	notes=(--notes bench/notes.md)
fi

# Not exec: the EXIT trap must still remove $work. ^C reaches bench (same
# process group), which stops its children and removes its temp dir.
# Flags given to run.sh come last and override these defaults.
"$work/bench" \
	--proxy-bin "$work/container-registry-proxy" \
	--registry-bin "$registry_bin" \
	--nginx-bin "$nginx_bin" \
	--out docs/benchmarks.md \
	--img-dir docs/img \
	--command "bench/run.sh${*:+ $*}" \
	"${notes[@]}" \
	"$@"
