#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each: the
# targets are found by their `func FuzzX(f *testing.F)` lines, so a new
# one is picked up without editing this script. The committed seed
# corpora (f.Add and testdata/fuzz/<FuzzX>/) run first, then new inputs
# for FUZZTIME. A finding fails the run; its reproducer is written to
# <package>/testdata/fuzz/<FuzzX>/<hash> and printed with the command that
# re-runs it. Commit it once the parser is fixed: it is a regression test
# that `go test` runs from then on.
#
#   FUZZTIME     time per target (default 10s; go test's -fuzztime syntax,
#                e.g. 30s or 5000x)
#   FUZZ_MATCH   extended regexp: only targets whose name matches
#   FUZZ_PARALLEL fuzzing workers per target (default: GOMAXPROCS)
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime="${FUZZTIME:-10s}"
match="${FUZZ_MATCH:-.}"
parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
	parallel=(-test.parallel "$FUZZ_PARALLEL")
fi

# targets lists "<package dir> <FuzzName>" for every fuzz target in a test
# file without build constraints (those need tags this script does not
# know).
targets() {
	grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
		sort | while read -r file; do
			grep -q '^//go:build' "$file" && continue
			grep -oE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' "$file" |
				sed -E "s|^func (Fuzz[A-Za-z0-9_]*).*|$(dirname "$file") \1|"
		done
}

# fuzz_one fuzzes target $3 of package dir $1 with its test binary $2,
# from the package's directory (testdata/ is relative to it), with go
# test's corpus cache; the output goes to $log.
fuzz_one() {
	(cd "$1" && "$2" -test.run '^$' -test.fuzz "^${3}\$" -test.fuzztime "$fuzztime" \
		-test.fuzzminimizetime 10s -test.fuzzcachedir "$corpus" \
		-test.timeout 10m "${parallel[@]}") >"$log" 2>&1
}

list="$(targets | grep -E " ($match)" || true)"
if [ -z "$list" ]; then
	echo "fuzz: no fuzz targets match $match"; exit 1
fi
n="$(wc -l <<<"$list")"
echo "== fuzzing $n targets for $fuzztime each"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/log"
cachedir="$(go env GOCACHE)/fuzz"
failed=()
start=$SECONDS
built=""
while read -r dir name; do
	t0=$SECONDS
	# One instrumented test binary per package.
	bin="$work/$(tr / _ <<<"$dir").test"
	if [ "$built" != "$dir" ]; then
		built="$dir"
		corpus="$cachedir/$(go list "$dir")"
		if ! go test -c -fuzz . -o "$bin" "$dir" >"$log" 2>&1; then
			rm -f "$bin"
			sed 's/^/    /' "$log"
		fi
	fi
	if [ ! -x "$bin" ]; then
		echo "FAIL $dir $name: the package does not build"
		failed+=("$dir $name: the package does not build")
		continue
	fi
	ok=""
	for attempt in 1 2; do
		if fuzz_one "$dir" "$bin" "$name"; then
			ok=1
			break
		fi
		# Go 1.26's fuzz coordinator may fail a target with a bare
		# "context deadline exceeded" as -fuzztime ends, writing no input
		# (go.dev/issue/75804, fixed in Go 1.27): run it once more, and
		# after a second such end warn instead of failing.
		grep -q 'Failing input written' "$log" && break
		grep -qxE '[[:space:]]*context deadline exceeded' "$log" || break
		if [ "$attempt" = 2 ]; then
			ok=flake
		fi
	done
	if [ -n "$ok" ]; then
		execs="$(grep -oE 'execs: [0-9]+' "$log" | tail -1 || true)"
		if [ "$ok" = flake ]; then
			echo "warn $dir $name: twice ended by go.dev/issue/75804 (no failing input)"
		else
			echo "ok   $dir $name ($((SECONDS - t0))s${execs:+, $execs})"
		fi
		continue
	fi
	echo "FAIL $dir $name ($((SECONDS - t0))s)"
	tail -n 30 "$log" | sed 's/^/    /'
	repro="$(grep -oE 'testdata/fuzz/[A-Za-z0-9_]+/[0-9a-f]+' "$log" | tail -1 || true)"
	if [ -n "$repro" ]; then
		echo "    reproducer: ${dir#./}/$repro"
		echo "    re-run:     go test -run '^${name}\$/${repro##*/}' $dir"
		failed+=("$dir $name: ${dir#./}/$repro")
	else
		failed+=("$dir $name: failed without a reproducer (see above)")
	fi
done <<<"$list"
echo "== fuzzing took $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $n targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
