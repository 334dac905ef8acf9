"""Shared set-up and teardown for banger's Python-orchestrated benchmarks.

The benchmarks start real processes (bangerd and its helper, stub
firecrackers, redis) and must leave none behind on any way out: a
failed check, an exception, ^C, or meson's SIGTERM at a timeout. Bench
is a context manager that owns every process and directory it starts and
releases them in __exit__; signals are turned into SystemExit so that
__exit__ runs for them too. Stubs also get PR_SET_PDEATHSIG, so even a
SIGKILLed benchmark takes them along.

bangerd logs every mutation (and its helper one audit line per probe) to
the stderr pipe that bangertest.Daemon reads; a benchmark makes thousands,
so a thread drains the pipe for the whole run or bangerd would block on a
full pipe and the benchmark would measure that.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import (IFACE, SKIP, STUB, Daemon, Kernel, Stub, check,  # noqa: E402,F401
                        die_with_parent, fail, link_exists, loops_on, require_root, run_ok,
                        skip, status_of, wait_until)

LOG_KEEP_BYTES = 256 * 1024


def add_json_option(parser):
    parser.add_argument("--json", metavar="FILE",
                        help="also append each figure to FILE as one JSON object per line "
                             "(what tools/bench-plots.py reads)")


def record(path, bench, **fields):
    """Append one figure to path (--json) as a JSON line {"bench": bench, ...}; no path, no-op.
    The printed lines stay for people; these are the stable form for scripts."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"bench": bench, **fields}, sort_keys=True) + "\n")


def _stop_on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def rss_kib(pid):
    """VmRSS of a process in KiB, as /proc/PID/status reports it."""
    value, unit = status_of(pid)["VmRSS"].split()
    check(unit == "kB", f"VmRSS unit {unit}")
    return int(value)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def StubProcess(api_sock):
    """A stub firecracker started now; call wait_exec() once a batch has been started."""
    return Stub(api_sock, wait=False)


class Bench:
    """Owns bangerd, stubs, extra processes and temp dirs of one benchmark run."""

    def __init__(self):
        self.daemon = None
        self.others = []  # more daemons (a baseline build's), stopped before self.daemon
        self.stubs = []
        self.procs = []
        self.dirs = []
        self.kernel = None

    def __enter__(self):
        require_root()  # before anything is installed or started
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _stop_on_signal)
        return self

    def __exit__(self, exc_type, exc, tb):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # every step below is bounded: let it finish
        failed = exc_type is not None and not (exc_type is SystemExit and exc.code in (0, SKIP))
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.kernel:
            self.kernel.cleanup()  # before the daemons' dirs go: losetup -j finds them by file
        # bangerd first: stubs that died under it would start exit handling and teardowns.
        for d in self.others:
            self._stop_daemon(d, show_log=failed)
        if self.daemon:
            self._stop_daemon(self.daemon, show_log=failed)
        for s in self.stubs:
            s.kill()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        return False

    def start_daemon(self, build=None):
        """bangerd as the integration tests run it: root, --user nobody, throw-away dirs.

        build: another build directory (a baseline commit's) whose bangerd and helper to run,
        beside this build's; by default this build's, as self.daemon."""
        # Daemon drains bangerd's log pipe itself, so a busy benchmark never blocks it.
        if build:
            d = Daemon(wait_ready=False, exe=os.path.join(build, "daemon", "bangerd"),
                       helper=os.path.join(build, "privhelper", "banger-privhelper"))
            self.others.append(d)
        else:
            d = self.daemon = Daemon(wait_ready=False)
        check(d.read_until("ready:"), f"bangerd never became ready:\n{d.log}")
        return d

    def _stop_daemon(self, d, show_log):
        if d.proc.poll() is None:
            d.proc.terminate()
            try:
                d.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print("bangerd did not exit within 15 s of SIGTERM; killing it", file=sys.stderr)
        d.finish()
        if show_log:
            print(f"--- bangerd log (last {LOG_KEEP_BYTES // 1024} KiB) ---\n{d.log[-20000:]}",
                  file=sys.stderr)

    def loop(self, d, name):
        """A real loop device on a file under d's loop root (SetHandles takes only attached
        loops: it records their diskseq), detached when the benchmark ends."""
        return self.kernel_objects().loop(os.path.join(d.loop_root, name))

    def tap(self, suffix):
        """A real tap (SetHandles takes only existing taps: it records their ifindex), deleted
        when the benchmark ends if nothing deleted it before."""
        return self.kernel_objects().tap(suffix)

    def kernel_objects(self):
        if self.kernel is None:
            self.kernel = Kernel("bench")
        return self.kernel

    def stub(self, api_sock):
        s = StubProcess(api_sock)
        self.stubs.append(s)
        s.wait_exec()
        return s

    def stubs_for(self, api_socks):
        """Start many stubs at once, then wait for each: exec overlaps instead of queueing."""
        started = []
        for sock in api_socks:
            s = StubProcess(sock)
            self.stubs.append(s)
            started.append(s)
        for s in started:
            s.wait_exec()
        return started

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)
        self.procs.append(p)
        return p

    def temp_dir(self, tag):
        d = tempfile.mkdtemp(prefix=f"banger-bench-{tag}-")
        self.dirs.append(d)
        return d


def run_checked(argv, what, timeout):
    """Run a measuring program; its stdout. Its stderr passes through; fail unless it
    exits 0 within timeout seconds."""
    return run_ok(argv, what, timeout, stdout=subprocess.PIPE, preexec_fn=die_with_parent).stdout


def key_values(line):
    """'a=1 b=2.5' -> {'a': 1.0, 'b': 2.5}."""
    return {k: float(v) for k, v in (tok.split("=", 1) for tok in line.split())}


def wait_fds_back(pid, baseline, what, timeout=5.0):
    """bangerd closes a finished client's connection asynchronously: wait (bounded) for it."""
    deadline = time.monotonic() + timeout
    while fd_count(pid) > baseline:
        if time.monotonic() > deadline:
            fail(f"bangerd holds {fd_count(pid)} fds after {what}, {baseline} before: a leak")
        time.sleep(0.05)
