#!/usr/bin/env python3
"""Embed a text file in C as `const char NAME[]` (the Varlink interface definitions)."""
import sys

src, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
with open(src, encoding="utf-8") as f:
    text = f.read()
lines = []
for line in text.splitlines(keepends=True):
    esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    lines.append(f'\t"{esc}"')
with open(out, "w", encoding="utf-8") as f:
    f.write(f"/* Generated from {src.split('/')[-1]} by tools/embed-text.py; do not edit. */\n")
    f.write(f"extern const char {name}[];\n")
    f.write(f"const char {name}[] =\n" + "\n".join(lines) + ";\n")
