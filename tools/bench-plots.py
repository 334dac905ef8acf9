#!/usr/bin/env python3
"""Plot the benchmarks' own output (their --json lines) with gnuplot, as PNGs.

    tools/bench-plots.py --input RESULTS.jsonl --output docs/img

RESULTS.jsonl holds one JSON object per line, as the benchmarks under
tests/bench append them with --json FILE ({"bench": "scan", ...}), plus one
{"bench": "meta", "machine": ..., "date": ...} line saying where and when
they ran (tools/bench-run.sh writes it); every plot carries that line, so a
picture in the repo always says where its figures come from. Rerunnable:
the same input gives the same pictures, overwritten in place. Only
gnuplot (Debian's gnuplot-nox) and the standard library are needed.

The plots (docs/benchmarks.md explains each):
  bench-scan.png        one helper SCAN vs one pgrep per socket, time vs N (log-log)
  bench-reconcile.png   bangerd's exec->READY vs pgrep per VM, vs N (log-log)
  bench-api.png         GetHandles / IsAlive latency percentiles against redis GET
  bench-set-handles.png SetHandles latency percentiles against the durable-write floor
  bench-rss.png         bangerd's RSS as VMs are registered, against vm.json on disk

A figure a run did not produce (a benchmark skipped) leaves its plot out,
and says so; input that is not what the benchmarks write is an error.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

PLOTS = ("scan", "reconcile", "api", "set_handles", "rss")
SIZE = "960,540"
FONT = "DejaVu Sans,11"


def fail(msg):
    print(f"bench-plots: {msg}", file=sys.stderr)
    sys.exit(1)


def load(path):
    """{bench: [records]} from a JSON-lines file; the one meta record under "meta"."""
    by_bench = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not JSON: {e}")
            if not isinstance(rec, dict) or not isinstance(rec.get("bench"), str):
                fail(f"{path}:{number}: not a benchmark record (no \"bench\")")
            by_bench.setdefault(rec["bench"], []).append(rec)
    metas = by_bench.get("meta", [])
    if len(metas) != 1 or not metas[0].get("machine") or not metas[0].get("date"):
        fail(f"{path}: needs exactly one {{\"bench\": \"meta\", \"machine\", \"date\"}} line")
    return by_bench


def need(rec, *keys):
    for k in keys:
        if not isinstance(rec.get(k), (int, float)) or isinstance(rec.get(k), bool):
            fail(f"a {rec['bench']} record lacks the number {k}: {rec}")
    return [rec[k] for k in keys]


def quote(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def datablock(name, rows):
    return f"${name} << EOD\n" + "\n".join(" ".join(str(c) for c in r) for r in rows) + "\nEOD\n"


def header(out, title, meta):
    """Terminal, output file, title and the where-and-when line at the foot."""
    return (f"set terminal pngcairo size {SIZE} font {quote(FONT)} noenhanced\n"
            f"set output {quote(out)}\n"
            f"set title {quote(title)}\n"
            f"set label 99 {quote('run on ' + meta['machine'] + ', ' + meta['date'])} "
            "at screen 0.01, screen 0.02 font ',9' tc rgb '#555555'\n"
            "set bmargin 5\nset grid\nset key top left box opaque\n")


def xpad(rows):
    """Room on a log x axis for the labels at the first and last N."""
    return f"set xrange [{rows[0][0] / 1.4}:{rows[-1][0] * 1.4}]\n"


def plot_scan(recs, meta, out):
    rows = sorted(need(r, "n", "helper_ms", "pgrep_ms") for r in recs)
    return (header(out, "Finding N firecrackers: one helper SCAN vs one pgrep per socket", meta) +
            datablock("D", rows) +
            xpad(rows) +
            "set logscale xy\nset xlabel 'api sockets asked for (N, half of them live)'\n"
            "set ylabel 'time for all N (ms, log)'\nset format y '%g'\n"
            "plot $D using 1:3 with linespoints lw 2 pt 7 title 'pgrep -f per socket (Go daemon)',"
            " $D using 1:2 with linespoints lw 2 pt 5 title 'one SCAN by banger-privhelper',"
            " $D using 1:3:(sprintf('%.0fx', $3/$2)) with labels offset 0,1.2 notitle\n")


def plot_reconcile(recs, meta, out):
    rows, extrapolated = [], []
    for r in recs:
        if r["n"] == 0:
            continue
        n, ours, theirs = need(r, "n", "bangerd_ms", "pgrep_ms")
        rows.append((n, ours, theirs))
        if r.get("pgrep_extrapolated"):
            extrapolated.append((n, theirs))
    rows.sort()
    if not rows:
        return None
    text = (header(out, "A restart's reconcile: bangerd exec->READY vs pgrep per VM", meta) +
            datablock("D", rows) + datablock("E", extrapolated or [("NaN", "NaN")]) +
            xpad(rows) +
            "set logscale xy\nset xlabel 'VM records (N, half of them live)'\n"
            "set ylabel 'time (ms, log)'\nset format y '%g'\n"
            "plot $D using 1:3 with linespoints lw 2 pt 7 title 'pgrep -f per VM (Go daemon)',"
            " $E using 1:2 with points pt 6 ps 2.5 lc rgb 'black' "
            "title 'pgrep: extrapolated from a sample',"
            " $D using 1:2 with linespoints lw 2 pt 5 "
            "title 'bangerd: exec to READY=1 (load, one SCAN, adopt)',"
            " $D using 1:3:(sprintf('%.0fx', $3/$2)) with labels offset 0,1.2 notitle\n")
    return text


def plot_api(recs, meta, out):
    series = {}
    for r in recs:
        p50, p99 = need(r, "p50_us", "p99_us")
        series[(r["method"], int(need(r, "clients")[0]))] = (
            p50, r.get("p95_us", "NaN"), p99, r.get("calls_per_s"))
    clients = sorted({c for _, c in series})
    methods = [m for m in ("GetHandles", "IsAlive", "redis GET") if any(m == k[0] for k in series)]
    if not clients or not methods:
        return None
    text = header(out, "", meta)
    text += ("set multiplot layout 1,%d title "
             "'API latency percentiles: bangerd answering from its cache vs redis GET'\n"
             % len(clients))
    text += "set style data histograms\nset style histogram clustered gap 1\n"
    text += "set style fill solid 0.8 border -1\nset boxwidth 0.9\nset logscale y\n"
    text += "set ylabel 'latency (us, log)'\nset format y '%g'\n"
    text += "set key top center horizontal\nset xtics nomirror rotate by -12 font ',9'\n"
    tallest = max(v[2] for v in series.values())
    text += f"set yrange [1:{tallest * 10}]\nset tmargin 4\n"
    for c in clients:
        rows = []
        for m in methods:
            p50, p95, p99, rate = series.get((m, c), ("NaN",) * 4)
            rate = f"{rate:.0f}/s" if isinstance(rate, (int, float)) else "-"
            rows.append((quote(f"{m}, {rate}"), p50, p95, p99))
        text += datablock(f"C{c}", rows)
        text += f"set title '{c} client{'s' if c != 1 else ''}, one call in flight each'\n"
        text += (f"plot $C{c} using 2:xtic(1) title 'p50', '' using 3 title 'p95', "
                 "'' using 4 title 'p99'\n")
    return text + "unset multiplot\n"


def plot_set_handles(recs, meta, out):
    r = recs[-1]
    rows = []
    for p in (10, 50, 90, 99):
        ours, floor = need(r, f"set_p{p}_us", f"floor_p{p}_us")
        rows.append((p, ours, floor))
    return (header(out, "SetHandles against the floor of its one durable write", meta) +
            datablock("D", rows) +
            "set xlabel 'percentile'\nset ylabel 'latency (us)'\nset yrange [0:*]\n"
            "set xtics ('p10' 10, 'p50' 50, 'p90' 90, 'p99' 99)\n"
            "plot $D using 1:2 with linespoints lw 2 pt 7 "
            f"title 'SetHandles ({int(r.get('calls', 0))} calls: probe, write, cache, watch)',"
            " $D using 1:3 with linespoints lw 2 pt 5 "
            "title 'floor: temp file, write, fdatasync, rename, fsync dir',"
            " $D using 1:2:(sprintf('%.2fx', $2/$3)) with labels offset 0,1 notitle\n")


def plot_rss(recs, meta, out):
    r = recs[-1]
    points = r.get("checkpoints")
    if not isinstance(points, list) or len(points) < 2:
        fail(f"the rss record has no checkpoints: {r}")
    per_vm, json_bytes = need(r, "bytes_per_vm", "vm_json_bytes")
    base = points[0][1]
    rows = [(n, kib, base + n * json_bytes / 1024) for n, kib in points]
    return (header(out, f"bangerd's RSS per VM: {per_vm:.0f} bytes per registered VM", meta) +
            datablock("D", rows) +
            "set xlabel 'VMs registered'\nset ylabel 'bangerd VmRSS (KiB)'\nset yrange [0:*]\n"
            "plot $D using 1:2 with linespoints lw 2 pt 7 title 'bangerd VmRSS',"
            " $D using 1:3 with lines lw 2 dt 2 "
            f"title 'start + N x vm.json size on disk ({json_bytes:.0f} bytes)'\n")


MAKERS = {"scan": plot_scan, "reconcile": plot_reconcile, "api": plot_api,
          "set_handles": plot_set_handles, "rss": plot_rss}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="the benchmarks' --json lines")
    p.add_argument("--output", required=True, help="directory for the PNGs")
    args = p.parse_args()
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        fail("gnuplot is not installed (Debian package gnuplot-nox)")
    data = load(args.input)
    meta = data["meta"][0]
    # Every script first: input that is not the benchmarks' makes no picture at all.
    scripts = []
    for bench in PLOTS:
        out = os.path.join(args.output, "bench-" + bench.replace("_", "-") + ".png")
        recs = data.get(bench)
        script = MAKERS[bench](recs, meta, out) if recs else None
        if script is None:
            print(f"bench-plots: no {bench} figures in {args.input}: {out} not made")
        else:
            scripts.append((out, script))
    if not scripts:
        fail(f"nothing to plot in {args.input}")
    os.makedirs(args.output, exist_ok=True)
    for out, script in scripts:
        r = subprocess.run([gnuplot], input=script, text=True, capture_output=True, timeout=60)
        if r.returncode != 0 or r.stderr.strip():
            fail(f"gnuplot failed on {out} (exit {r.returncode}):\n{r.stderr}\n--- script:\n"
                 f"{script}")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
