#!/bin/sh
# Every C file follows the repo's .clang-format (STYLE.md: one style, enforced).
set -eu
src=$1
if ! command -v clang-format >/dev/null 2>&1; then
	echo "SKIP: clang-format is not installed"
	exit 77
fi
cd "$src"
files=$(find common proto daemon privhelper ctl tests -name '*.[ch]' 2>/dev/null | sort)
bad=0
for f in $files; do
	if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
		echo "not formatted: $f (run: clang-format -i $f)"
		bad=1
	fi
done
echo "$(echo "$files" | wc -l) files checked"
exit $bad
