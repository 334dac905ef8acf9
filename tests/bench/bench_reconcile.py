#!/usr/bin/env python3
"""What a restart costs: bangerd's exec to READY=1 against the Go daemon's pgrep per VM.

After every start bangerd loads its records and decides, for all of them
at once, which VMs still live: one SCAN of /proc by its helper. The Go
daemon ran `pgrep -f <api socket>` once per VM, a fork/exec that reads
every process's cmdline each time. For each N (default 1000, then 5000)
this benchmark registers N VMs (ids r00000.., odd ones live on a stub
firecracker with their handles set, even ones stopped and holding nothing,
so that reconcile decides liveness and has nothing to tear down), stops
bangerd, and then:

- **bangerd**: starts it again on the same state dir, a few times, and
  times each start from its exec (a timestamp the child takes as the last
  thing before execve) to the READY=1 datagram it sends to NOTIFY_SOCKET,
  as systemd would see it. READY=1 comes after the records are loaded, the
  SCAN is answered and every live VM is adopted. Each start is checked: the
  reconcile log line must say N/2 kept and N/2 clean, nothing else, and
  GetStatus must count N/2 running; then bangerd is stopped with SIGTERM.
- **pgrep-per-VM**: one `pgrep -f -- SOCKET` per record (spawned, its
  output read through a pipe, as Go's exec.Command(...).Output() did),
  timed as a batch, each answer checked. Up to N=--pgrep-full-max the
  whole batch runs (at least once, again while within a time budget);
  above it, a sample of --pgrep-sample records is timed and the total
  extrapolated, and the output says so.

Also measured: exec to READY with no records at all (the fixed cost of a
start), so that the per-record figures can be compared with and without
it; a constant time per record from one N to the next means linear cost.
Prints ratios; never asserts a timing.

usage: bench_reconcile.py [--sizes N ...] [--repeats R] [--pgrep-full-max N]
                          [--pgrep-sample N] [--pgrep-budget SECONDS]
"""
import argparse
import os
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import IFACE, Bench, Daemon, add_json_option, check, fail, record, skip  # noqa: E402

NS_PER_MS = 1e6
READY_TIMEOUT_S = 120
PGREP_MAX_RUNS = 3
TASK_HEADROOM = 500  # tasks left free for pgrep, bangerd, the helper and the host


def vm_id(i):
    return f"r{i:05d}"


def is_live(i):
    return i % 2 == 1  # interleaved, as after a restart where some VMs died and others did not


def sock_of(root, i):
    return os.path.join(root, "vms", vm_id(i), "api.sock")


def host_tasks():
    return sum(1 for e in os.listdir("/proc") if e.isdigit())


def feasible_sizes(sizes):
    """Drop, with the reason printed, any N whose N/2 stubs the kernel could not hold."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with open("/proc/sys/kernel/threads-max") as f:
        threads_max = int(f.read())
    room = min(pid_max, threads_max) - host_tasks() - TASK_HEADROOM
    out = []
    for n in sizes:
        if n // 2 <= room:
            out.append(n)
            continue
        largest = 2 * room
        print(f"N={n} needs {n // 2} live stubs, but pid_max {pid_max} / threads-max "
              f"{threads_max} leave room for {room}: using N={largest} instead")
        if largest >= 2:
            out.append(largest)
    return out


def raise_nofile():
    """bangerd lifts its own limit; this process holds a pipe per pgrep and one per stub exec."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class NotifySocket:
    """The datagram socket systemd would listen on; bangerd sends READY=1 as its user."""

    def __init__(self, directory):
        os.chmod(directory, 0o755)  # bangerd notifies after dropping to nobody
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)

    def flush(self):
        """Drop what an earlier bangerd sent (STOPPING=1)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def wait_ready(self, daemon):
        """CLOCK_MONOTONIC ns when a datagram with READY=1 arrived; fails if bangerd exits."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], 0.5)
            if ready:
                data = self.sock.recv(4096)
                now = time.monotonic_ns()
                if b"READY=1" in data.split(b"\n"):
                    return now
                continue
            if daemon.proc.poll() is not None:
                fail(f"bangerd exited {daemon.proc.returncode} before READY=1:\n{daemon.log}")
        fail(f"no READY=1 within {READY_TIMEOUT_S} s:\n{daemon.log}")

    def close(self):
        self.sock.close()


def start_daemon(bench, root, notify, extra=()):
    """bangerd on root's state, as after a restart: (daemon, exec_ns, ready_ns)."""
    notify.flush()
    rfd, wfd = os.pipe()  # close-on-exec: bangerd never sees it

    def mark_exec():  # in the child: the last step before execve
        os.write(wfd, time.monotonic_ns().to_bytes(8, "little"))

    os.environ["NOTIFY_SOCKET"] = notify.path  # only while this one child is spawned
    try:
        d = Daemon(root=root, wait_ready=False, preexec=mark_exec, extra=extra)
    finally:
        del os.environ["NOTIFY_SOCKET"]
        os.close(wfd)
    bench.daemon = d
    try:
        stamp = os.read(rfd, 8)
    finally:
        os.close(rfd)
    check(len(stamp) == 8, "no exec timestamp from the child")
    ready_ns = notify.wait_ready(d)
    return d, int.from_bytes(stamp, "little"), ready_ns


def stop_daemon(bench):
    d = bench.daemon
    rc = d.stop()
    check(rc == 0, f"bangerd exited {rc} on SIGTERM:\n{d.log[-5000:]}")
    d.finish()
    bench.daemon = None


def populate(bench, c, root, have, want):
    """Records have..want-1: odd ones live on a stub with handles set, even ones stopped."""
    for i in range(have, want):
        # keep: a stub killed at the end must not start a teardown of anything.
        c.call(IFACE + "Register", {"id": vm_id(i), "api_sock": sock_of(root, i),
                                    "on_exit": "keep"})
    live = [i for i in range(have, want) if is_live(i)]
    stubs = bench.stubs_for([sock_of(root, i) for i in live])
    pids = {}
    for i, stub in zip(live, stubs):
        reply = c.call(IFACE + "SetHandles", {"id": vm_id(i), "pid": stub.pid})
        check(reply["vm"]["handles"]["pid"] == stub.pid, f"SetHandles {vm_id(i)}: {reply}")
        pids[i] = stub.pid
    for i in range(have, want):
        if not is_live(i):
            c.call(IFACE + "ClearHandles", {"id": vm_id(i)})  # stopped, holding nothing
    return pids


def check_counts(c, n, live):
    status = c.call(IFACE + "GetStatus")
    counts, counters = status["counts"], status["counters"]
    check(counts == {"vms": n, "starting": 0, "running": live, "stopped": n - live,
                     "liveness_unknown": 0},
          f"GetStatus counts {counts}, want {n} VMs, {live} running, {n - live} stopped")
    check(counters["errors"] == 0, f"bangerd counted errors: {counters}")


def scan_us(log):
    """The helper's own time for the start-up SCAN, from its audit line (us), or None."""
    m = re.search(r' call=startup-reconcile op=scan .*? dur_us=(\d+)', log)
    return int(m.group(1)) if m else None


def time_restarts(bench, root, notify, n, live, repeats):
    """exec->READY of `repeats` starts on root's records, each checked.

    Returns (ns samples, the helper's SCAN time in us for each start whose audit line was read).
    """
    samples, scans = [], []
    want = (f"reconcile: {n} VMs: {live} kept, 0 torn down, 0 failed, 0 unknown, "
            f"{n - live} clean, 0 retained; 0 orphans")
    for _ in range(repeats):
        d, exec_ns, ready_ns = start_daemon(bench, root, notify)
        samples.append(ready_ns - exec_ns)
        check(d.read_until(want), f"want the log line '{want}':\n{d.log[-5000:]}")
        c = d.client()
        check_counts(c, n, live)
        c.close()
        stop_daemon(bench)
        us = scan_us(d.log)
        if us is not None:
            scans.append(us)
    return samples, scans


def pgrep_batch(pgrep, root, indices, pids):
    """One pgrep -f per record; returns ns per call. Checks each answer."""
    times = []
    for i in indices:
        sock = sock_of(root, i)
        start = time.monotonic_ns()
        out = subprocess.run([pgrep, "-f", "--", sock], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        times.append(time.monotonic_ns() - start)
        if i in pids:
            check(out.returncode == 0 and out.stdout == f"{pids[i]}\n".encode(),
                  f"pgrep {sock}: exit {out.returncode}, {out.stdout!r}; want {pids[i]}")
        else:
            check(out.returncode == 1 and out.stdout == b"",
                  f"pgrep {sock}: exit {out.returncode}, {out.stdout!r}; want none")
    return times


def pgrep_baseline(args, pgrep, root, n, pids):
    """(total ns, how it was obtained): whole batches up to --pgrep-full-max, else a sample."""
    if n <= args.pgrep_full_max:
        totals, spent, first = [], 0, None
        while len(totals) < PGREP_MAX_RUNS and (not totals or spent < args.pgrep_budget * 1e9):
            times = pgrep_batch(pgrep, root, range(n), pids)
            totals.append(sum(times))
            spent += totals[-1]
            first = first or times
        k = min(args.pgrep_sample, n)
        sampled = sum(first[:k]) * n / k
        how = (f"median of {len(totals)}; the first {k} calls extrapolated would say "
               f"{sampled / NS_PER_MS:.0f} ms")
        return statistics.median(totals), how, False
    k = args.pgrep_sample
    times = pgrep_batch(pgrep, root, range(k), pids)
    how = (f"extrapolated from {k} measured pgreps, "
           f"{sum(times) / k / NS_PER_MS:.1f} ms each, x{n}")
    return sum(times) * n / k, how, True


def ms(ns):
    return ns / NS_PER_MS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pgrep-full-max", type=int, default=1000)
    p.add_argument("--pgrep-sample", type=int, default=500)
    p.add_argument("--pgrep-budget", type=float, default=60.0)
    add_json_option(p)
    args = p.parse_args()
    check(all(2 <= n <= 8192 for n in args.sizes) and args.sizes == sorted(set(args.sizes)),
          "--sizes: increasing, each from 2 to 8192 (one SCAN names at most 8192 sockets)")
    check(args.repeats >= 1 and args.pgrep_sample >= 2, "--repeats >= 1, --pgrep-sample >= 2")
    with Bench() as bench:
        pgrep = shutil.which("pgrep")
        if not pgrep:
            skip("needs pgrep (procps) for the Go daemon's per-VM baseline")
        nofile = raise_nofile()
        sizes = feasible_sizes(args.sizes)
        check(sizes, "no size is feasible on this machine")
        notify = NotifySocket(bench.temp_dir("notify"))
        try:
            run(bench, args, pgrep, sizes, notify, nofile)
        finally:
            notify.close()


def run(bench, args, pgrep, sizes, notify, nofile):
    print(f"RLIMIT_NOFILE {nofile}; host tasks before any stub {host_tasks()}", flush=True)
    empty = bench.temp_dir("reconcile-empty")
    t0 = statistics.median(time_restarts(bench, empty, notify, 0, 0, args.repeats)[0])
    print(f"reconcile N=0: bangerd exec->READY {ms(t0):.1f} ms (median of {args.repeats}): "
          f"the fixed cost of a start", flush=True)
    record(args.json, "reconcile", n=0, live=0, bangerd_ms=ms(t0))

    root = bench.temp_dir("reconcile")
    have, pids, figures = 0, {}, []
    for n in sizes:
        live = sum(1 for i in range(n) if is_live(i))
        # Only to add records: thousands of calls need not each be logged.
        d, _, _ = start_daemon(bench, root, notify, extra=("--log-level", "warning"))
        c = d.client()
        pids.update(populate(bench, c, root, have, n))
        have = n
        check_counts(c, n, live)
        c.close()
        stop_daemon(bench)
        tasks = host_tasks()
        samples, scans = time_restarts(bench, root, notify, n, live, args.repeats)
        t = statistics.median(samples)
        base, how, extrapolated = pgrep_baseline(args, pgrep, root, n, pids)
        figures.append((n, t))
        print(f"reconcile N={n} live={live}: bangerd exec->READY {ms(t):.0f} ms "
              f"(median of {len(samples)}; all: {', '.join(f'{ms(s):.0f}' for s in samples)}) "
              f"vs pgrep-per-VM {ms(base):.0f} ms ({how}): ratio {base / t:.0f}x "
              f"[host tasks {tasks}]", flush=True)
        record(args.json, "reconcile", n=n, live=live, bangerd_ms=ms(t),
               bangerd_all_ms=[ms(s) for s in samples], pgrep_ms=ms(base),
               pgrep_extrapolated=extrapolated, host_tasks=tasks,
               scan_ms=statistics.median(scans) / 1000 if scans else None)
        if scans:
            print(f"  of which the helper's SCAN (its audit dur_us, median of {len(scans)}): "
                  f"{statistics.median(scans) / 1000:.1f} ms", flush=True)

    print("linearity: exec->READY per record (1.0 = linear, above = worse than linear)")
    (n1, t1) = figures[0]
    for n, t in figures:
        line = (f"  N={n:<5} {ms(t):7.1f} ms = {t / n / 1000:6.1f} us/record"
                f" ({t / n / (t1 / n1):.2f}x N={n1}); without the fixed "
                f"{ms(t0):.1f} ms: {(t - t0) / n / 1000:6.1f} us/record")
        if n != n1 and t1 > t0:
            line += f" ({(t - t0) / n / ((t1 - t0) / n1):.2f}x N={n1})"
        print(line)
    print("issue target (reported, never asserted): ratio >= 200x at N=1000")


if __name__ == "__main__":
    main()
