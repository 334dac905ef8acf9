#!/bin/sh
# Runs a libFuzzer target for a bounded time as a meson test, and fails
# loudly. Left to itself libFuzzer exits 77 on a crash, a sanitizer report
# or a leak, which meson records as a skip; here whatever libFuzzer reports
# fails the test, and the input that caused it is kept and named.
#
# libFuzzer adds every input that finds new coverage to its corpus
# directory, so it works on a copy: the checked-in seeds stay exactly what
# the generators wrote.
#
# Usage: run-fuzzer.sh FUZZER CORPUS_DIR SECONDS [LIBFUZZER_OPTION...]
# BANGER_FUZZ_SECONDS, when set at test time, overrides SECONDS; meson's own
# test timeout was fixed at configure time, so raise it with
# `meson test --timeout-multiplier` when asking for much more.
#
# Exit status, as meson reads it:
#   0   libFuzzer ran its time and found nothing
#   1   libFuzzer found something: a crash or sanitizer report, a leak, an
#       input slower than PER_INPUT_SECONDS, more memory than RSS_LIMIT_MB.
#       The input is kept as ./<fuzzer>-<kind>-<sha1> in meson's working
#       directory (build-dir/meson-logs' parent) and its path is printed.
#   77  the fuzzer cannot run here; the reason is printed
#   99  the runner is misused, or libFuzzer failed without naming an input
#       (killed from outside, say): an error, never an expected failure
set -eu

PER_INPUT_SECONDS=10
RSS_LIMIT_MB=2048

if [ $# -lt 3 ]; then
	echo "usage: $0 FUZZER CORPUS_DIR SECONDS [LIBFUZZER_OPTION...]" >&2
	exit 99
fi
fuzzer=$1
seed_dir=$2
duration=${BANGER_FUZZ_SECONDS:-$3}
shift 3

if [ ! -x "$fuzzer" ]; then
	echo "SKIP: $fuzzer is not built (configure with -Dfuzzing=true and CC=clang)"
	exit 77
fi
if [ ! -d "$seed_dir" ]; then
	echo "$0: seed corpus $seed_dir is missing" >&2
	exit 99
fi
case $duration in
"" | *[!0-9]*)
	echo "$0: the duration must be whole seconds, not '$duration'" >&2
	exit 99
	;;
esac

# A report of undefined behaviour is a finding like any other, not a line in a passing log.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

fuzzer=$(realpath "$fuzzer")
name=$(basename "$fuzzer")
artifact_dir=$(pwd)
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/banger-fuzz.XXXXXX") || exit 99
trap 'rm -rf "$work_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
{ mkdir "$work_dir/corpus" && cp -R "$seed_dir"/. "$work_dir/corpus/"; } || exit 99
touch "$work_dir/started"

status=0
"$fuzzer" -max_total_time="$duration" -timeout="$PER_INPUT_SECONDS" \
	-rss_limit_mb="$RSS_LIMIT_MB" -error_exitcode=1 -timeout_exitcode=1 \
	-print_final_stats=1 -artifact_prefix="$artifact_dir/$name-" "$@" \
	"$work_dir/corpus" || status=$?
if [ "$status" -eq 0 ]; then
	exit 0
fi

# What this run wrote, not what an earlier one left behind.
found=$(find "$artifact_dir" -maxdepth 1 -type f -newer "$work_dir/started" \
	\( -name "$name-crash-*" -o -name "$name-leak-*" -o -name "$name-timeout-*" \
	-o -name "$name-oom-*" \) -print)
if [ -z "$found" ]; then
	echo "FAIL: $name exited $status without writing the input that failed" >&2
	exit 99
fi
for input in $found; do
	echo "FAIL: $name found a problem; the input is $input"
	echo "      reproduce: $fuzzer $input"
done
exit 1
