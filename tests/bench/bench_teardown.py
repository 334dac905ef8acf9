#!/usr/bin/env python3
"""One VM's teardown (a real tap and two real loop devices) through bangerd and its helper,
against the Go daemon's fork/exec of `ip link del` and `losetup -d` twice.

Each iteration makes, for each of the three ways, a fresh tap
(`ip tuntap add dev bgtbNNN mode tap`) and two loop devices (`losetup -f
--show`) on fresh 1 MiB files under bangerd's loop root; making them is
never timed. Then:

- **exit**: a VM registered with the tap and the loop files planned,
  SetHandles'd on a stub firecracker with the tap and the two loops. The
  stub is killed (SIGKILL), and the time from the kill to the VM's
  `torn_down` event on a Watch stream is measured: bangerd notices the
  exit on the pidfd, asks the helper to tear down, records the VM stopped
  (two durable writes) and emits the event.
- **Teardown**: the same VM with on_exit keep, its stub killed and the
  `exited` event seen, so the resources are still there; the round trip
  of the Teardown(id) call is measured (the same helper work and writes).
- **fork/exec**: `ip link del TAP`, `losetup -d LOOP1`, `losetup -d LOOP2`,
  each spawned with its output read through a pipe, timed together.

After each, the kernel must show the tap and both loops gone; at the end
`losetup -a` and `ip -br link` must show nothing of this run, and bangerd
its fd count from before. Prints medians and ratios; never asserts a
timing. Interleaved (the order rotates every iteration), after a few
uncounted warm-up iterations. One Watch stream serves the whole run and is
closed only after bangerd has exited: an event sent to a Watch client that
has disconnected is a use-after-free in bangerd when this was written.

usage: bench_teardown.py [--iterations N] [--warmup N]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (IFACE, Bench, Daemon, add_json_option, check, fail, fd_count,  # noqa: E402
                      link_exists, loops_on, record, skip, wait_fds_back)
from bangertest import Kernel, sh  # noqa: E402

NS_PER_MS = 1e6
TAP_PREFIX = "bgtb"  # under the test daemon's tap prefix "bgt"
TAP_NAMES_MAX = 1000  # bgtb000..bgtb999
WAYS = ("exit", "Teardown", "fork/exec")


class BenchKernel(Kernel):
    """The taps and loops this run made (bangertest's Kernel: whatever is left is removed on
    every way out), with names that survive a SIGKILLed earlier run's leftovers."""

    def __init__(self, loop_root):
        super().__init__("b")
        self.loop_root = loop_root
        self.next_tap = 0

    def tap(self):
        # A tap left by a SIGKILLed earlier run keeps its name: take the next free one.
        while True:
            check(self.next_tap < TAP_NAMES_MAX, f"no free {TAP_PREFIX}NNN name left")
            name = f"{TAP_PREFIX}{self.next_tap:03d}"
            self.next_tap += 1
            if not link_exists(name):
                return self.add_tap(name)

    def loop_file(self, name):
        """A fresh file under the loop root and a loop device on it: (file, /dev/loopN)."""
        path = os.path.join(self.loop_root, name)
        return path, self.loop(path)

    def vm_resources(self, tag):
        """A tap and two loops: (tap, [file, file], [/dev/loopN, /dev/loopM])."""
        tap = self.tap()
        (f1, l1), (f2, l2) = self.loop_file(f"{tag}-rootfs.img"), self.loop_file(f"{tag}-cow.img")
        return tap, [f1, f2], [l1, l2]

    def check_gone(self, what, tap, files):
        check(not link_exists(tap), f"{what}: tap {tap} is still there")
        for f in files:
            check(loops_on(f) == [], f"{what}: loop on {f} is still there: {loops_on(f)}")

    def leaks(self):
        """What of ours the kernel's own listings still show."""
        left = [line for line in sh("losetup", "-a").splitlines() if self.loop_root in line]
        ours = set(self.taps)
        left += [line for line in sh("ip", "-br", "link").splitlines()
                 if line.split()[0].split("@")[0] in ours]
        return left


class VMs:
    """Registers each iteration's VM and drives it to the point where timing starts.

    One Watch stream for the whole run, read in order: every event of a VM
    up to the one wanted is consumed, so the stream never backs up.
    """

    def __init__(self, bench, d, c, kernel):
        self.bench, self.d, self.c, self.k = bench, d, c, kernel
        self.watcher = d.client().watch()
        self.n = 0

    def wait_event(self, vm, kind):
        while True:
            ev = self.watcher.next_event()
            if ev.get("id") != vm:
                continue
            check(ev["kind"] not in ("teardown_failed", "persist_failed"), f"{vm}: {ev}")
            if ev["kind"] == kind:
                return ev

    def running(self, on_exit):
        """A VM on a live stub holding a real tap and two real loops."""
        vm = f"td{self.n:03d}"
        self.n += 1
        tap, files, loops = self.k.vm_resources(vm)
        sock = os.path.join(self.d.api_root, vm, "api.sock")
        self.c.call(IFACE + "Register", {"id": vm, "api_sock": sock, "on_exit": on_exit,
                                         "planned": {"tap": tap, "loop_files": files}})
        stub = self.bench.stub(sock)
        reply = self.c.call(IFACE + "SetHandles",
                            {"id": vm, "pid": stub.pid, "tap": tap, "loops": loops})
        check(reply["persisted"] is True, f"SetHandles {vm}: {reply}")
        self.wait_event(vm, "handles_set")
        return vm, stub, tap, files

    def reap(self, stub):
        stub.kill()
        self.bench.stubs.remove(stub)

    def forget(self, vm):
        self.c.call(IFACE + "Unregister", {"id": vm})
        self.wait_event(vm, "unregistered")


def check_results(what, results, tap, loops_n=2):
    """Every item removed or absent; the tap and the loop devices actually removed."""
    bad = [r for r in results if r["status"] not in ("removed", "absent")]
    check(not bad, f"{what}: not torn down: {bad}")
    removed = [(r["kind"], r["name"]) for r in results if r["status"] == "removed"]
    check(("tap", tap) in removed and sum(k == "loop" for k, _ in removed) == loops_n,
          f"{what}: want the tap and {loops_n} loops removed: {results}")


def way_exit(vms):
    vm, stub, tap, files = vms.running("teardown")
    start = time.monotonic_ns()
    os.kill(stub.pid, signal.SIGKILL)
    ev = vms.wait_event(vm, "exited")
    check(ev["pid"] == stub.pid, f"{vm}: exited {ev}, want pid {stub.pid}")
    ev = vms.wait_event(vm, "torn_down")
    took = time.monotonic_ns() - start
    check(f"tap {tap}: removed" in ev.get("detail", ""), f"{vm}: {ev}")
    vms.reap(stub)
    vms.k.check_gone(f"{vm} after exit", tap, files)
    listed = [v for v in vms.c.call(IFACE + "List")["vms"] if v["id"] == vm]
    check(len(listed) == 1 and listed[0]["state"] == "stopped" and "handles" not in listed[0],
          f"{vm}: want stopped without handles: {listed}")
    vms.forget(vm)
    return took, tap, None


def way_teardown(vms):
    vm, stub, tap, files = vms.running("keep")
    os.kill(stub.pid, signal.SIGKILL)
    vms.wait_event(vm, "exited")
    vms.reap(stub)
    check(link_exists(tap), f"{vm}: on_exit keep, yet the tap is gone")
    start = time.monotonic_ns()
    results = vms.c.call(IFACE + "Teardown", {"id": vm})["results"]
    took = time.monotonic_ns() - start
    check_results(vm, results, tap)
    vms.k.check_gone(f"{vm} after Teardown", tap, files)
    vms.forget(vm)
    return took, tap, None


def way_fork_exec(vms):
    tap, files, loops = vms.k.vm_resources(f"fx{vms.n:03d}")
    vms.n += 1
    parts = []
    for argv in (["ip", "link", "del", tap], ["losetup", "-d", loops[0]],
                 ["losetup", "-d", loops[1]]):
        # As Go's exec.Command(...).CombinedOutput(): spawned, output read through a pipe.
        start = time.monotonic_ns()
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        parts.append(time.monotonic_ns() - start)
        if out.returncode != 0:
            fail(f"{' '.join(argv)}: exit {out.returncode}: {out.stdout.decode().strip()}")
    vms.k.check_gone(f"fork/exec {tap}", tap, files)
    return sum(parts), tap, parts


def helper_durations(log):
    """tap -> the helper's own time (us) for the teardown that removed it, from its audit lines."""
    found = {}
    for m in re.finditer(r'op=teardown .*?tap="([^":]+):removed".*? dur_us=(\d+)', log):
        found[m.group(1)] = int(m.group(2))
    return found


def host_loop_devices():
    return sum(1 for e in os.listdir("/sys/block") if e.startswith("loop"))


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.9 * len(xs)))]


def ms(ns):
    return ns / NS_PER_MS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    add_json_option(p)
    args = p.parse_args()
    check(args.iterations >= 1 and args.warmup >= 0 and
          (args.iterations + args.warmup) * len(WAYS) <= TAP_NAMES_MAX,
          f"--iterations >= 1, and (iterations + warmup) x {len(WAYS)} <= {TAP_NAMES_MAX}")
    with Bench() as bench:
        for tool in ("ip", "losetup"):
            if not shutil.which(tool):
                skip(f"needs {tool} for the real devices and the fork/exec baseline")
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun: cannot create tap devices here")
        if not os.path.exists("/dev/loop-control"):
            skip("no /dev/loop-control: cannot create loop devices here")
        # Daemon's own reader drains the log pipe, whole: the helper's audit lines are read.
        d = bench.daemon = Daemon()
        kernel = BenchKernel(d.loop_root)
        try:
            run(args, VMs(bench, d, d.client(), kernel))
        finally:
            # The Watch stream stays open until bangerd is gone: a watcher that
            # disconnects while bangerd runs makes its next event a use-after-free.
            kernel.cleanup()  # before bangerd's dir goes: losetup -j finds loops by file


def measure(args, vms):
    """{way: [(ns, tap, parts)]} of the counted iterations."""
    ways = {"exit": way_exit, "Teardown": way_teardown, "fork/exec": way_fork_exec}
    samples = {w: [] for w in WAYS}
    for i in range(args.warmup + args.iterations):
        order = WAYS[i % len(WAYS):] + WAYS[:i % len(WAYS)]
        for w in order:
            sample = ways[w](vms)
            if i >= args.warmup:
                samples[w].append(sample)
    return samples


def run(args, vms):
    fds0 = fd_count(vms.d.proc.pid)
    samples = measure(args, vms)
    wait_fds_back(vms.d.proc.pid, fds0, "the teardowns")
    left = vms.k.leaks()
    check(not left, f"left behind: {left}")
    status = vms.c.call(IFACE + "GetStatus")
    check(status["counters"]["errors"] == 0 and status["counts"]["vms"] == 0,
          f"bangerd: {status}")
    rc = vms.d.stop()
    check(rc == 0, f"bangerd exited {rc} on SIGTERM")
    vms.watcher.close()
    vms.c.close()
    report(args, samples, helper_durations(vms.d.log), fds0)


def report(args, samples, helper_us, fds0):
    took = {w: [s[0] for s in samples[w]] for w in WAYS}
    med = {w: statistics.median(took[w]) for w in WAYS}
    for w in WAYS:
        record(args.json, "teardown", way=w, median_ms=ms(med[w]), p90_ms=ms(p90(took[w])),
               iterations=len(took[w]))
    parts = list(zip(*(s[2] for s in samples["fork/exec"])))
    print(f"teardown of one VM (tap + 2 loops), {args.iterations} iterations of each, "
          f"interleaved, after {args.warmup} warm-up; medians:")
    print(f"  bangerd exit->torn_down (kill -9 to the Watch event): {ms(med['exit']):6.2f} ms "
          f"(p90 {ms(p90(took['exit'])):.2f})")
    print(f"  bangerd Teardown(id) call round trip:                {ms(med['Teardown']):6.2f} ms "
          f"(p90 {ms(p90(took['Teardown'])):.2f})")
    print(f"  fork/exec ip link del + 2x losetup -d:               {ms(med['fork/exec']):6.2f} ms "
          f"(p90 {ms(p90(took['fork/exec'])):.2f}; ip link del "
          f"{ms(statistics.median(parts[0])):.2f}, losetup -d {ms(statistics.median(parts[1])):.2f}"
          f" and {ms(statistics.median(parts[2])):.2f})")
    print(f"ratio fork/exec / exit->torn_down: {med['fork/exec'] / med['exit']:.2f}x; "
          f"fork/exec / Teardown call: {med['fork/exec'] / med['Teardown']:.2f}x")
    for w in ("exit", "Teardown"):
        found = [s for s in samples[w] if s[1] in helper_us]
        if found:
            helper = statistics.median(helper_us[s[1]] / 1000 for s in found)
            rest = statistics.median(ms(s[0]) - helper_us[s[1]] / 1000 for s in found)
            print(f"  {w}: the helper's own teardown {helper:.2f} ms (its audit dur_us, "
                  f"{len(found)} of {len(samples[w])}); the rest (bangerd, its writes, the "
                  f"round trips) {rest:.2f} ms")
    print("(bangerd's figures include recording the VM stopped: two durable writes; "
          "the fork/exec baseline writes nothing. Both wait for the kernel's RTM_DELLINK of "
          "the tap, most of either figure; the helper also looks each planned loop file up "
          f"among the host's {host_loop_devices()} loop devices in /sys/block)")
    print(f"leak check: losetup -a and ip -br link show nothing of this run; "
          f"bangerd fds back to {fds0}, 0 errors, 0 VMs left, exit 0 on SIGTERM")


if __name__ == "__main__":
    main()
