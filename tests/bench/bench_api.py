#!/usr/bin/env python3
"""Read-path throughput and latency of bangerd against redis on the same machine, same run.

GetHandles and IsAlive are the calls a VM manager makes all the time, and
both are answered from bangerd's in-memory cache: they should cost about
what a small in-memory key-value server costs per request. redis GET over a
Unix socket is that yardstick. Sets up one VM on a live stub firecracker,
a private redis-server holding a value as long as the GetHandles reply,
then for 1 and 50 concurrent clients, in interleaved rounds (the machine is
shared and noisy), runs redis-benchmark and the C load generator bench_api
(one epoll loop, N closed-loop connections, as redis-benchmark drives
redis). Prints medians over the rounds and the ratio bangerd/redis; never
asserts a figure. Fails only on wrong replies, redis misses, or a leak.

With --baseline BUILD_DIR (another commit's build, e.g. a worktree of it
configured with meson), that build's bangerd runs beside this one, each with
its own VM, and every round measures both back to back (in alternating
order); it then prints, per method and concurrency, the median over rounds
of this build's calls/s over the baseline's in the same round: the noise of
a shared machine hits both alike.

usage: bench_api.py BENCH_API_EXE [--rounds N] [--seconds S] [--baseline BUILD_DIR]
"""
import argparse
import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (IFACE, Bench, add_json_option, check, fd_count, key_values,  # noqa: E402
                      record, rss_kib, run_checked, skip, wait_fds_back, wait_until)

CLIENTS = (1, 50)
METHODS = ("GetHandles", "IsAlive")
WARMUP_MS = 500
VM_ID = "b1"
# redis-benchmark -t get without -r asks for this literal key.
REDIS_KEY = b"key:__rand_int__"
# A short first redis-benchmark run per concurrency sizes the real one to the same duration.
CALIBRATION_REQUESTS = {1: 20000, 50: 100000}


def redis_tools():
    """redis-server and redis-benchmark, installed with apt-get if missing; skip if impossible."""
    tools = ("redis-server", "redis-benchmark")
    if all(shutil.which(t) for t in tools):
        return [shutil.which(t) for t in tools]
    print("redis baseline missing: apt-get install -y redis-server redis-tools", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(["apt-get", "install", "-y", "-q", "redis-server", "redis-tools"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=600)
        out = r.stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        out = str(e)
    if not all(shutil.which(t) for t in tools):
        skip(f"the baseline needs redis-server and redis-benchmark; apt-get failed: {out[-400:]}")
    return [shutil.which(t) for t in tools]


def resp(*args):
    """A command in redis's wire protocol (RESP)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class RedisClient:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def command(self, *args):
        """Send one command; return its reply's first line and, for a bulk string, the body."""
        self.sock.sendall(resp(*args))
        buf = b""
        while b"\r\n" not in buf:
            chunk = self.sock.recv(65536)
            check(chunk, "redis closed the connection")
            buf += chunk
        line, _, rest = buf.partition(b"\r\n")
        if not line.startswith(b"$") or line == b"$-1":
            return line, None
        size = int(line[1:])
        while len(rest) < size + 2:
            chunk = self.sock.recv(65536)
            check(chunk, "redis closed the connection")
            rest += chunk
        return line, rest[:size]

    def close(self):
        self.sock.close()


def redis_stats(path):
    c = RedisClient(path)
    try:
        _, body = c.command(b"INFO", b"stats")
    finally:
        c.close()
    fields = dict(line.split(":", 1) for line in body.decode().splitlines() if ":" in line)
    return int(fields["keyspace_hits"]), int(fields["keyspace_misses"])


def start_redis(bench, server, value):
    """A private redis-server on a Unix socket (never the system service), holding value."""
    d = bench.temp_dir("redis")
    path = os.path.join(d, "redis.sock")
    bench.spawn([server, "--port", "0", "--unixsocket", path, "--unixsocketperm", "700",
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", d,
                 "--logfile", os.path.join(d, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            c = RedisClient(path)
        except OSError:
            return False
        c.close()
        return True
    wait_until(answers, 10, "redis-server to answer on its socket")
    c = RedisClient(path)
    check(c.command(b"SET", REDIS_KEY, value)[0] == b"+OK", "redis SET")
    check(c.command(b"GET", REDIS_KEY)[1] == value, "redis GET returns the value")
    c.close()
    return path


def redis_benchmark(tool, path, clients, requests):
    """One redis-benchmark GET run: requests/s, and p50/p95/p99 in us when this version prints
    them."""
    out = run_checked([tool, "-s", path, "-t", "get", "-c", str(clients), "-n", str(requests),
                       "-P", "1", "--csv"], "redis-benchmark", timeout=300)
    rows = [r for r in csv.reader(out.splitlines()) if r]
    header = next((r for r in rows if r[0] == "test"), ["test", "rps"])
    data = next((r for r in rows if r[0] == "GET"), None)
    check(data is not None, f"no GET line in redis-benchmark output:\n{out}")
    row = dict(zip(header, data))
    result = {"rps": float(row["rps"])}
    for key in ("p50", "p95", "p99"):
        if f"{key}_latency_ms" in row:
            result[f"{key}_us"] = float(row[f"{key}_latency_ms"]) * 1000
    return result


def setup_vm(bench, d, tap_suffix):
    """Register VM_ID and SetHandles it on a live stub; returns (pid, GetHandles reply bytes).
    Each bangerd (this build's, the baseline's) gets its own tap: tap_suffix tells them apart."""
    c = d.client()
    sock = os.path.join(d.api_root, VM_ID, "api.sock")
    # on_exit keep: the resources named are made up, and nothing must try to tear them down.
    tap = bench.tap(tap_suffix)  # real: SetHandles records its ifindex
    c.call(IFACE + "Register", {"id": VM_ID, "api_sock": sock, "on_exit": "keep", "planned": {
        "tap": tap, "loop_files": [os.path.join(d.loop_root, VM_ID, "rootfs.ext4")],
        "dm": [f"bangertest-{VM_ID}"]}})
    stub = bench.stub(sock)
    loop = bench.loop(d, "l0.img")  # real: SetHandles records its diskseq
    c.call(IFACE + "SetHandles", {"id": VM_ID, "pid": stub.pid, "tap": tap,
                                  "loops": [loop], "dm": [f"bangertest-{VM_ID}"]})
    # The raw reply, as it crosses the socket: redis will serve a value exactly as long.
    c.send(IFACE + "GetHandles", {"id": VM_ID})
    while b"\0" not in c.buf:
        chunk = c.sock.recv(65536)
        check(chunk, "bangerd closed the connection")
        c.buf += chunk
    raw, _, c.buf = c.buf.partition(b"\0")
    check(b'"error"' not in raw and str(stub.pid).encode() in raw, f"GetHandles: {raw!r}")
    c.close()
    return stub.pid, raw


def cpu_seconds(pid):
    """User + system CPU time a process has used (/proc/PID/stat, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_loadgen(exe, d, method, clients, pid, seconds):
    """One loadgen run; its figures, and bangerd's CPU per call over the whole run."""
    cpu0 = cpu_seconds(d.proc.pid)
    out = run_checked([exe, d.socket, method, VM_ID, str(clients), str(pid), str(WARMUP_MS),
                       str(int(seconds * 1000))], f"bench_api {method} c={clients}",
                      timeout=seconds + 120)
    figures = key_values(out.strip().splitlines()[-1])
    # The warm-up's calls are not in the count, its CPU is: the ratio between builds is fair.
    figures["cpu_us_per_call"] = ((cpu_seconds(d.proc.pid) - cpu0) * 1e6 /
                                  max(figures["calls"] * (1 + WARMUP_MS / 1000 / seconds), 1))
    return figures


def fmt(figures, key):
    return f"{figures[key]:.0f}" if key in figures else "n/a"


def median_of(rounds):
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def measure(args, d, pid, redis_path, bench_tool, base=None):
    """Interleaved rounds: redis, then each method on bangerd (and on the baseline's)."""
    requests = {}
    for c in CLIENTS:
        calib = redis_benchmark(bench_tool, redis_path, c, CALIBRATION_REQUESTS[c])
        requests[c] = max(int(calib["rps"] * args.seconds), 1000)
    ours = {(m, c): [] for m in METHODS for c in CLIENTS}
    based = {(m, c): [] for m in METHODS for c in CLIENTS}
    theirs = {c: [] for c in CLIENTS}
    for rnd in range(1, args.rounds + 1):
        for c in CLIENTS:
            r = redis_benchmark(bench_tool, redis_path, c, requests[c])
            theirs[c].append(r)
            line = f"round {rnd} c={c}: redis GET {fmt(r, 'rps')}/s"
            for m in METHODS:
                runs = [("", d, pid, ours)] + ([("baseline ", *base, based)] if base else [])
                for label, daemon, vm_pid, into in runs[::1 if rnd % 2 else -1]:
                    f = run_loadgen(args.loadgen, daemon, m, c, vm_pid, args.seconds)
                    into[(m, c)].append(f)
                    line += f", {label}{m} {f['calls_per_s']:.0f}/s"
            print(line, flush=True)
    return ours, theirs, based


def report_baseline(args, ours, based):
    """Per method and concurrency: median of the per-round ratios this build / baseline."""
    print(f"against the baseline build {args.baseline} (median of {args.rounds} per-round "
          "ratios; > 1: this build is faster)")
    for c in CLIENTS:
        for m in METHODS:
            pairs = list(zip(ours[(m, c)], based[(m, c)]))
            ratios = [a["calls_per_s"] / b["calls_per_s"] for a, b in pairs]
            p50 = [a["p50_us"] / max(b["p50_us"], 0.1) for a, b in pairs]
            # bangerd's own CPU per call: what a busy machine disturbs least.
            cpu = [a["cpu_us_per_call"] / max(b["cpu_us_per_call"], 1e-3) for a, b in pairs]
            print(f"{m} c={c}: calls/s {statistics.median(a['calls_per_s'] for a, _ in pairs):.0f}"
                  f" vs {statistics.median(b['calls_per_s'] for _, b in pairs):.0f}, "
                  f"ratio {statistics.median(ratios):.3f}x (rounds {min(ratios):.2f}-"
                  f"{max(ratios):.2f}); p50 latency ratio {statistics.median(p50):.3f}x; "
                  f"bangerd CPU per call {statistics.median(a['cpu_us_per_call'] for a, _ in pairs):.1f}"
                  f" vs {statistics.median(b['cpu_us_per_call'] for _, b in pairs):.1f} us, "
                  f"ratio {statistics.median(cpu):.3f}x (> 1: this build costs more)")


def report(args, ours, theirs, reply_bytes):
    print(f"medians of {args.rounds} interleaved rounds, {args.seconds:g} s each after "
          f"{WARMUP_MS} ms warm-up; GetHandles reply {reply_bytes} bytes, redis value as long")
    for c in CLIENTS:
        r = median_of(theirs[c])
        for m in METHODS:
            f = median_of(ours[(m, c)])
            print(f"{m} c={c}: {f['calls_per_s']:.0f} calls/s p50 {f['p50_us']:.0f} us "
                  f"p99 {f['p99_us']:.0f} us | redis GET c={c}: {r['rps']:.0f} req/s "
                  f"p50 {fmt(r, 'p50_us')} us p99 {fmt(r, 'p99_us')} us | "
                  f"ratio {f['calls_per_s'] / r['rps']:.2f}x")
            record(args.json, "api", method=m, clients=c, calls_per_s=f["calls_per_s"],
                   **{k: f[k] for k in ("p50_us", "p95_us", "p99_us")})
        record(args.json, "api", method="redis GET", clients=c, calls_per_s=r["rps"],
               **{k: r[k] for k in ("p50_us", "p95_us", "p99_us") if k in r})
    print("issue targets (reported, never asserted): >= 0.7x redis at c=50; "
          "p99 <= 200 us at c=1")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("loadgen")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--baseline", help="another build directory whose bangerd to compare with")
    add_json_option(p)
    args = p.parse_args()
    with Bench() as bench:
        server, bench_tool = redis_tools()
        d = bench.start_daemon()
        pid, raw = setup_vm(bench, d, "api")
        base = None
        if args.baseline:
            bd = bench.start_daemon(build=args.baseline)
            base = (bd, setup_vm(bench, bd, "old")[0])
        redis_path = start_redis(bench, server, raw)
        hits0, misses0 = redis_stats(redis_path)
        fds0, rss0 = fd_count(d.proc.pid), rss_kib(d.proc.pid)
        ours, theirs, based = measure(args, d, pid, redis_path, bench_tool, base)
        hits, misses = redis_stats(redis_path)
        check(misses == misses0 and hits > hits0, f"redis GET missed {misses - misses0} times")
        wait_fds_back(d.proc.pid, fds0, "the load runs")
        status = d.client().call(IFACE + "GetStatus")
        check(status["counters"]["errors"] == 0, f"bangerd counted errors: {status['counters']}")
        report(args, ours, theirs, len(raw))
        if base:
            report_baseline(args, ours, based)
        print(f"bangerd: {status['counters']['calls']} calls, 0 errors; RSS {rss0} KiB before "
              f"the load, {rss_kib(d.proc.pid)} KiB after; fds back to {fds0}")


if __name__ == "__main__":
    main()
