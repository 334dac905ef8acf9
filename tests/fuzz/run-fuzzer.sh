#!/bin/sh
# Runs a libFuzzer target for a bounded time as a meson test. libFuzzer adds
# every input that finds new coverage to its corpus directory, so it works on
# a copy: the checked-in seeds stay exactly what make_corpus wrote.
#
# Usage: run-fuzzer.sh FUZZER CORPUS_DIR SECONDS
# BANGER_FUZZ_SECONDS, when set at test time, overrides SECONDS; meson's own
# test timeout was fixed at configure time, so raise it with
# `meson test --timeout-multiplier` when asking for much more.
# A crash input is kept as ./<fuzzer>-crash-<sha1> in meson's working directory.
set -eu

if [ $# -ne 3 ]; then
	echo "usage: $0 FUZZER CORPUS_DIR SECONDS" >&2
	exit 2
fi
fuzzer=$1
seed_dir=$2
duration=${BANGER_FUZZ_SECONDS:-$3}

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/banger-fuzz.XXXXXX")
trap 'rm -rf "$work_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cp -R "$seed_dir"/. "$work_dir"/

status=0
"$fuzzer" -max_total_time="$duration" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$(pwd)/$(basename "$fuzzer")-" "$work_dir" || status=$?
exit "$status"
