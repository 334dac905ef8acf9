#!/usr/bin/env python3
"""The longest C functions outside tests, and those over a limit.

A function is counted from the line of its name to its closing brace (the
tree is clang-formatted: a definition's closing brace is the first "}" in
column 0 after it). Blank lines and
comments inside count: they are part of what a reader holds in mind.

Usage: long-functions.py [--limit N] [--top K] [ROOT]
Exit: 1 when some function is longer than the limit (default 60), else 0.
"""
import argparse
import pathlib
import re
import subprocess
import sys

SKIP_DIRS = ("tests/", "build", "clients/go/")
# A definition's first line: a name and "(" in column 0 or after a return type,
# not a statement (no ";" at its end) and not a macro.
START = re.compile(r"^(?!static_assert|typedef|#|\s)[^;=]*?\b([A-Za-z_]\w*)\s*\([^;]*$")


def c_files(root):
    out = subprocess.run(["git", "-C", root, "ls-files", "*.c"], capture_output=True,
                         text=True, check=True).stdout.split()
    return [f for f in out if not f.startswith(SKIP_DIRS)]


def functions(path):
    lines = pathlib.Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = START.match(lines[i])
        if not m:
            i += 1
            continue
        # The signature may continue; the body opens with "{" alone in column 0.
        j = i
        while j < len(lines) and lines[j] != "{" and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or lines[j] != "{":
            i += 1
            continue
        k = j + 1
        while k < len(lines) and lines[k] != "}":
            k += 1
        yield m.group(1), i + 1, k - i + 1
        i = k + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("root", nargs="?", default=str(pathlib.Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    found = []
    for f in c_files(args.root):
        for name, line, length in functions(pathlib.Path(args.root) / f):
            found.append((length, f, line, name))
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    print(f"the {args.top} longest functions outside tests:")
    for length, f, line, name in found[:args.top]:
        print(f"{length:5d}  {f}:{line}  {name}")
    over = [t for t in found if t[0] > args.limit]
    print(f"{len(over)} over {args.limit} lines ({len(found)} functions read)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
