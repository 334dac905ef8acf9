#!/usr/bin/env bash
# Run every benchmark of tests/bench small (a few minutes in all, nice'd), each
# appending its figures to one JSON-lines file (--json), then draw the plots of
# docs/benchmarks.md from that file with tools/bench-plots.py. As root, after a
# build (`./dev build`). The first line of the file says on which machine and
# when: every plot shows it.
#
#   tools/bench-run.sh [BUILD_DIR [RESULTS.jsonl [IMG_DIR]]]
#       defaults: build, BUILD_DIR/bench-results.jsonl, docs/img
#
# A benchmark that cannot run here skips (exit 77) and its plot is left out;
# any other failure stops the run. Larger runs: call the benchmarks directly
# with their own options (tests/bench/README.md) and the same --json file.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-$build/bench-results.jsonl}
img=${3:-docs/img}

export BANGERD=$PWD/$build/daemon/bangerd
export BANGER_HELPER=$PWD/$build/privhelper/banger-privhelper
export BANGER_STUB_FIRECRACKER=$PWD/$build/tests/firecracker
for f in "$BANGERD" "$BANGER_HELPER" "$BANGER_STUB_FIRECRACKER"; do
	[[ -x $f ]] || { echo "bench-run: $f is missing: build first (./dev build)" >&2; exit 1; }
done

# Where and when, for the foot of every plot.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
machine="$cpu, $(nproc) cores, $mem, Linux $(uname -r), shared with other work"
python3 -c 'import json, sys; print(json.dumps({"bench": "meta", "machine": sys.argv[1], "date": sys.argv[2]}))' \
	"$machine" "$(date -u +%Y-%m-%d)" >"$out"

run() {
	echo "==> $*" >&2
	local rc=0
	nice -n 5 "$@" || rc=$?
	if ((rc == 77)); then
		echo "==> skipped (exit 77): its plot will be missing" >&2
	elif ((rc != 0)); then
		echo "bench-run: $1 failed (exit $rc)" >&2
		exit "$rc"
	fi
}

run "$build/tests/bench/bench_scan" --json "$out" 100 300 1000
run python3 tests/bench/bench_reconcile.py --json "$out" --sizes 100 300 1000 --repeats 3 \
	--pgrep-full-max 300 --pgrep-sample 100 --pgrep-budget 20
run python3 tests/bench/bench_api.py "$build/tests/bench/bench_api" --json "$out" --rounds 1 \
	--seconds 2
run python3 tests/bench/bench_set_handles.py "$build/tests/bench/bench_set_handles" --json "$out" \
	--calls 300
run python3 tests/bench/bench_rss.py --json "$out" --vms 3000 --running 200
run python3 tests/bench/bench_teardown.py --json "$out" --iterations 10 --warmup 1
python3 tools/bench-plots.py --input "$out" --output "$img"
