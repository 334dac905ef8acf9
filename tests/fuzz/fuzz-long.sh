#!/bin/sh
# The long run of one fuzz target: RUNS executions in all (10 million by
# default), split over JOBS libFuzzer processes (2) that share one corpus
# directory and pick up each other's finds. Unlike the meson test
# (run-fuzzer.sh) it keeps its work in WORK_DIR (./fuzz-long-<target>): the
# grown corpus, each job's log, whatever was found (artifacts/), and a
# ledger of the segments run so far.
#
# A run may take more hours than a machine gives at once, so it goes in
# segments: each invocation runs what is still owed (RUNS less the ledger's
# total), or less when bounded by -max_total_time=SECONDS, and appends one
# line to WORK_DIR/ledger: when, how long, how many executions (libFuzzer's
# own count; for a segment stopped from outside, its last status line's),
# the fuzzer binary's hash and the commit it was built from, and what was
# found. The corpus carries over, so a run in segments is the same search
# as one long process bar libFuzzer's in-memory statistics. A segment run
# with another binary is recorded under its hash: the ledger shows what ran.
#
# REPLAY=OTHER_FUZZER (say, the same target built with ASan when the run
# uses a faster UBSan-only build) then runs every input of the grown corpus
# once through OTHER_FUZZER, and the ledger line says how that went.
#
# Usage: fuzz-long.sh FUZZER SEED_DIR [LIBFUZZER_OPTION...]
#   RUNS=10000000 JOBS=2 WORK_DIR=./fuzz-long-<target> REPLAY= from the environment.
# Exit: 0 nothing found; 1 a job (or the replay) found something, listed at the
# end; 99 misuse.
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
replay=${REPLAY:-}
name=$(basename "$fuzzer")
work=${WORK_DIR:-./fuzz-long-$name}
case $runs$jobs in
*[!0-9]*)
	echo "$0: RUNS and JOBS must be whole numbers" >&2
	exit 99
	;;
esac
if [ ! -x "$fuzzer" ] || [ ! -d "$seed_dir" ] || [ "$jobs" -lt 1 ] ||
	{ [ -n "$replay" ] && [ ! -x "$replay" ]; }; then
	echo "$0: need a built fuzzer (and REPLAY's), a seed directory and JOBS >= 1" >&2
	exit 99
fi

pids=""
interrupted=no
trap 'interrupted=yes; kill $pids 2>/dev/null || true' INT TERM

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
mkdir -p "$work/corpus" "$work/artifacts"
cp -R "$seed_dir"/. "$work/corpus/"
ledger=$work/ledger

# The ledger's executions so far (the fourth field of each line).
ledger_total() {
	[ -f "$ledger" ] || {
		echo 0
		return
	}
	awk -F '\t' '!/^#/ { n += $4 } END { print n + 0 }' "$ledger"
}

done_before=$(ledger_total)
owed=$((runs - done_before))
if [ "$owed" -le 0 ]; then
	echo "$name: the ledger already holds $done_before of $runs executions:"
	cat "$ledger"
	exit 0
fi
per_job=$(((owed + jobs - 1) / jobs))
binary_hash=$(sha256sum "$fuzzer" | cut -c1-16)
commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -f "$ledger" ] || printf '# started\tseconds\tjobs\texecutions\tbinary-sha256\tcommit\tfound\treplay\n' >"$ledger"

echo "$name: $done_before of $runs executions done; this segment: $jobs jobs x $per_job"
echo "  corpus $work/corpus, logs $work/job-*.log, ledger $ledger"
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started=$(date +%s)
job=1
while [ "$job" -le "$jobs" ] && [ "$interrupted" = no ]; do
	"$fuzzer" -runs="$per_job" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
		-timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
		"$@" "$work/corpus" >"$work/job-$job.log" 2>&1 &
	pids="$pids $!"
	job=$((job + 1))
done
status=0
for pid in $pids; do
	# A wait cut short by the trap is retried: the job is ending, its log is not written yet.
	while :; do
		if wait "$pid"; then
			break
		else
			rc=$?
		fi
		[ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null && continue
		# Ended by our own kill (libFuzzer exits 72 then): stopped, not failed.
		[ "$interrupted" = yes ] || status=1
		break
	done
done
elapsed=$(($(date +%s) - started))

total=0
job=1
while [ "$job" -le "$jobs" ]; do
	log=$work/job-$job.log
	executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	# Stopped from outside, a job prints no final stats: its last status line counts.
	[ -n "$executed" ] || executed=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 |
		sed 's/^#\([0-9]*\).*/\1/')
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	final=$(grep -E '^#[0-9]+[[:space:]].*cov:' "$log" | tail -n 1)
	echo "job $job: ${executed:-?} executions, ${rate:-?} exec/s; last: $final"
	total=$((total + ${executed:-0}))
	job=$((job + 1))
done

replayed=-
if [ -n "$replay" ]; then
	inputs=$(find "$work/corpus" -type f | wc -l)
	if "$replay" -runs=0 -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
		-artifact_prefix="$work/artifacts/replay-" "$work/corpus" >"$work/replay.log" 2>&1; then
		replayed="$inputs-inputs-clean"
	else
		replayed="$inputs-inputs-FOUND"
		status=1
	fi
	echo "replay of $inputs corpus inputs through $replay: $replayed (log $work/replay.log)"
fi

found=none
if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
	found=FOUND
	status=1
fi
[ "$interrupted" = yes ] && found="$found,stopped"
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$started_at" "$elapsed" "$jobs" "$total" \
	"$binary_hash" "$commit" "$found" "$replayed" >>"$ledger"
echo "segment: $total executions in ${elapsed}s ($((total / (elapsed > 0 ? elapsed : 1))) exec/s over $jobs jobs)"
echo "ledger: $(ledger_total) of $runs executions"
if [ "$status" -ne 0 ]; then
	echo "FOUND:"
	ls -l "$work/artifacts"
	exit 1
fi
