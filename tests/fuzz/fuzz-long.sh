#!/bin/sh
# The long run of one fuzz target: RUNS executions in all (10 million by
# default), split over JOBS libFuzzer processes (2) that share one corpus
# directory and pick up each other's finds. Unlike the meson test
# (run-fuzzer.sh) it keeps its work in WORK_DIR (./fuzz-long-<target>): the
# grown corpus for the next run, each job's log, and whatever was found, in
# artifacts/. It ends with the figures to report: executions, exec/s, and
# each job's final cov:/ft: line.
#
# Usage: fuzz-long.sh FUZZER SEED_DIR [LIBFUZZER_OPTION...]
#   RUNS=10000000 JOBS=2 WORK_DIR=./fuzz-long-<target> from the environment.
#   Bounded by time instead: add -max_total_time=SECONDS (each job stops then).
# Exit: 0 nothing found; 1 a job found something (listed at the end); 99 misuse.
set -eu

if [ $# -lt 2 ]; then
	echo "usage: $0 FUZZER SEED_DIR [LIBFUZZER_OPTION...]" >&2
	exit 99
fi
fuzzer=$1
seed_dir=$2
shift 2
runs=${RUNS:-10000000}
jobs=${JOBS:-2}
name=$(basename "$fuzzer")
work=${WORK_DIR:-./fuzz-long-$name}
case $runs$jobs in
*[!0-9]*)
	echo "$0: RUNS and JOBS must be whole numbers" >&2
	exit 99
	;;
esac
if [ ! -x "$fuzzer" ] || [ ! -d "$seed_dir" ] || [ "$jobs" -lt 1 ]; then
	echo "$0: need a built fuzzer, a seed directory and JOBS >= 1" >&2
	exit 99
fi

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
mkdir -p "$work/corpus" "$work/artifacts"
cp -R "$seed_dir"/. "$work/corpus/"
per_job=$(((runs + jobs - 1) / jobs))

echo "$name: $jobs jobs x $per_job executions, corpus $work/corpus, logs $work/job-*.log"
started=$(date +%s)
pids=""
trap 'kill $pids 2>/dev/null; exit 130' INT TERM
job=1
while [ "$job" -le "$jobs" ]; do
	"$fuzzer" -runs="$per_job" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
		-timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
		"$@" "$work/corpus" >"$work/job-$job.log" 2>&1 &
	pids="$pids $!"
	job=$((job + 1))
done
status=0
for pid in $pids; do
	wait "$pid" || status=1
done
elapsed=$(($(date +%s) - started))

total=0
job=1
while [ "$job" -le "$jobs" ]; do
	log=$work/job-$job.log
	executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	final=$(grep -E '^#[0-9]+[[:space:]].*cov:' "$log" | tail -n 1)
	echo "job $job: ${executed:-?} executions, ${rate:-?} exec/s; last: $final"
	total=$((total + ${executed:-0}))
	job=$((job + 1))
done
echo "total: $total executions in ${elapsed}s ($((total / (elapsed > 0 ? elapsed : 1))) exec/s over $jobs jobs)"
if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
	echo "FOUND:"
	ls -l "$work/artifacts"
	exit 1
fi
