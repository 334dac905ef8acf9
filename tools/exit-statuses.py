#!/usr/bin/env python3
"""Print bangerd(8)'s EXIT STATUS entries (scdoc) from daemon/exit_status.h.

The header's BANGERD_EXIT_STATUSES table is the one source of bangerd's exit
statuses; meson runs this at configure time and puts its output into the
page, so the page lists exactly the rows the code exits with.
"""
import re
import sys
import textwrap

ROW = re.compile(r'X\(\s*(\w+)\s*,\s*(\d+)\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)')


def rows(text):
    # Join the macro's continuation lines, then read each X(name, value, "meaning" ...).
    text = text.replace("\\\n", " ")
    for name, value, literals in ROW.findall(text):
        meaning = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', literals))
        yield name, int(value), meaning


def main():
    found = list(rows(open(sys.argv[1], encoding="utf-8").read()))
    if not found:
        sys.exit(f"{sys.argv[1]}: no X(name, value, meaning) rows")
    entries = []
    for _, value, meaning in sorted(found, key=lambda r: r[1]):
        body = textwrap.fill(meaning, width=72, initial_indent="\t", subsequent_indent="\t")
        entries.append(f"*{value}*\n{body}")
    print("\n\n".join(entries))


if __name__ == "__main__":
    main()
