#!/usr/bin/env python3
"""tools/bench-plots.py on a small benchmark output checked in as a fixture.

tests/bench/fixtures/results-small.jsonl is what tools/bench-run.sh wrote on
a real (small) run: the benchmarks' own --json lines and the meta line. The
script must turn it into the five PNGs of docs/benchmarks.md, each a real
picture (a PNG whose IHDR says 960x540 and whose pixels are not one
colour), and must refuse input that is not the benchmarks' (no meta line, a
line that is not JSON, a record without its figures) with exit 1 and no
picture. A benchmark missing from the input leaves its plot out and says so.
argv: the script, the fixture.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import check, fail  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WANT = ("bench-scan.png", "bench-reconcile.png", "bench-api.png", "bench-set-handles.png",
        "bench-rss.png")


def png_facts(path):
    """(width, height, distinct byte values of the decoded scanlines)."""
    with open(path, "rb") as f:
        data = f.read()
    check(data.startswith(PNG_MAGIC), f"{path} is not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        check(zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length:
                                                                  pos + 12 + length])[0],
              f"{path}: bad CRC in a {kind!r} chunk")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    check(ihdr is not None and idat, f"{path}: no IHDR or no image data")
    pixels = zlib.decompress(idat)
    return ihdr[0], ihdr[1], len(set(pixels))


def run(script, fixture, out):
    return subprocess.run([sys.executable, script, "--input", fixture, "--output", out],
                          capture_output=True, text=True, timeout=120)


def main():
    script, fixture = sys.argv[1], sys.argv[2]
    if not shutil.which("gnuplot"):
        fail("gnuplot is not installed (./dev deps installs gnuplot-nox)")
    work = tempfile.mkdtemp(prefix="banger-test-plots-")
    try:
        out = os.path.join(work, "img")
        r = run(script, fixture, out)
        check(r.returncode == 0, f"bench-plots exit {r.returncode}:\n{r.stdout}{r.stderr}")
        check(sorted(os.listdir(out)) == sorted(WANT), f"made {sorted(os.listdir(out))}")
        for name in WANT:
            w, h, colours = png_facts(os.path.join(out, name))
            check((w, h) == (960, 540), f"{name} is {w}x{h}")
            check(colours > 8, f"{name} is nearly blank ({colours} byte values)")
            print(f"{name}: {w}x{h}, {colours} byte values")
        # Rerunnable: a second run overwrites the same files.
        r = run(script, fixture, out)
        check(r.returncode == 0 and sorted(os.listdir(out)) == sorted(WANT), "second run")

        with open(fixture) as f:
            lines = [l for l in f if l.strip()]
        bad = {
            "no meta line": [l for l in lines if json.loads(l)["bench"] != "meta"],
            "a line that is not JSON": lines + ["{not json\n"],
            "a scan record without its figures": lines + ['{"bench": "scan", "n": 5}\n'],
        }
        for what, content in bad.items():
            path = os.path.join(work, "bad.jsonl")
            with open(path, "w") as f:
                f.writelines(content)
            bad_out = os.path.join(work, "bad-img")
            r = run(script, path, bad_out)
            check(r.returncode == 1 and r.stderr.startswith("bench-plots: "),
                  f"{what}: exit {r.returncode} {r.stderr!r}")
            check(not os.path.exists(bad_out) or not os.listdir(bad_out),
                  f"{what}: pictures made anyway")
            shutil.rmtree(bad_out, ignore_errors=True)
            print(f"refused {what}: {r.stderr.strip().splitlines()[0]}")

        path = os.path.join(work, "no-rss.jsonl")
        with open(path, "w") as f:
            f.writelines(l for l in lines if json.loads(l)["bench"] != "rss")
        r = run(script, path, os.path.join(work, "partial"))
        check(r.returncode == 0 and "no rss figures" in r.stdout and
              "bench-rss.png" not in os.listdir(os.path.join(work, "partial")),
              f"without rss figures: {r.returncode} {r.stdout!r} {r.stderr!r}")
        print("without rss figures: the other four plots, and a note")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
