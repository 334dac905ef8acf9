#!/usr/bin/env python3
"""Print the lines of C that run as root: every compile unit of the source
tree that banger-privhelper's debug info names, plus privhelper's own
headers, counted without blank lines and comments. Libraries from the
system (libc, libnl, libdevmapper, libcap-ng) are not ours and not counted.

The figure is what a reviewer of the root side has to read; the README
quotes it. Usage:

    tools/root-lines.py [BUILD_DIR]     (default: build; needs a build with -g)

Reads the binary's DWARF with readelf (binutils), so it counts what the
linker really put in, not what meson.build says it might.
"""
import os
import re
import subprocess
import sys

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join("privhelper", "banger-privhelper")
HEADER_DIR = os.path.join(SOURCE_ROOT, "privhelper")


def compile_units(binary):
    """Absolute paths of the compile units in binary's debug info."""
    out = subprocess.run(
        ["readelf", "--debug-dump=info", binary],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    units, name = [], None
    for line in out.splitlines():
        if "DW_TAG_compile_unit" in line:
            name = None
            continue
        m = re.search(r"DW_AT_(name|comp_dir)\s*:.*?:?\s(\S+)$", line)
        if not m:
            continue
        if m.group(1) == "name" and name is None:
            name = m.group(2)
        elif m.group(1) == "comp_dir" and name is not None:
            units.append(os.path.normpath(os.path.join(m.group(2), name)))
            name = None
    return units


def code_lines(text):
    """Lines that hold code once comments are removed (strings are kept intact)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return sum(1 for line in "".join(out).splitlines() if line.strip())


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    binary = os.path.join(build, HELPER)
    ours = [
        u for u in compile_units(binary)
        if u.startswith(SOURCE_ROOT + os.sep) and os.path.exists(u)
    ]
    ours += sorted(
        os.path.join(HEADER_DIR, f) for f in os.listdir(HEADER_DIR) if f.endswith(".h")
    )
    total = 0
    for path in sorted(set(ours)):
        with open(path, encoding="utf-8") as f:
            count = code_lines(f.read())
        total += count
        print(f"{count:6d}  {os.path.relpath(path, SOURCE_ROOT)}")
    print(f"{total:6d}  total lines that run as root")


if __name__ == "__main__":
    main()
