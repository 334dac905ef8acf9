#!/usr/bin/env python3
"""bangerctl end to end, against a real bangerd and its helper.

bangerd is started as root dropping to the test user (bangertest.Daemon),
its control socket in a directory the dropped daemon may write. A stub
firecracker (BANGER_STUB_FIRECRACKER, a do-nothing static program) stands in
for a VM; it serves nothing, but its name and argv are what the helper
verifies. One case per run (argv[1]); the bangerctl to test is argv[2].
Every wait is for an event (a log line, an output line, a process exit),
each bounded; nothing sleeps blindly.
"""
import json
import os
import shutil
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (IFACE, STUB_OTHER, Daemon, Kernel, Stub, check, diskseq_of, fail,  # noqa: E402
                        ifindex_of, require_root, run_cases)

CTL = ""  # argv[2]
# meson.project_version(), from the test's environment: what bangerctl --version and
# bangerd's status must both say (comparing bangerctl with itself would prove nothing).
VERSION = os.environ.get("BANGER_PROJECT_VERSION", "")


class Session:
    """A Daemon plus the processes a case starts (stubs, watchers), all gone at the end."""

    def __init__(self):
        self.daemon = Daemon()
        self.socket = self.daemon.socket
        self.api_root = self.daemon.api_root
        self.loop_root = self.daemon.loop_root
        self.proc = self.daemon.proc
        self.stubs = []
        self.watchers = []

    def stub(self, api_sock, exe=None):
        s = Stub(api_sock, exe)
        self.stubs.append(s)
        return s

    def finish(self):
        for w in self.watchers:
            if w.poll() is None:
                w.kill()
            w.wait()
        for s in self.stubs:
            s.kill()
        self.daemon.finish()


def ctl(daemon, *args, timeout=10):
    """Run bangerctl against daemon; returns (exit status, stdout, stderr)."""
    argv = [CTL] + (["--socket", daemon.socket] if daemon else []) + list(args)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"{' '.join(argv)} ran over {timeout} s")
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def ctl_ok(daemon, *args):
    rc, out, err = ctl(daemon, *args)
    check(rc == 0, f"bangerctl {' '.join(args)}: exit {rc}\nstdout: {out}\nstderr: {err}")
    return out


def ctl_json(daemon, *args):
    out = ctl_ok(daemon, "--json", *args)
    lines = out.splitlines()
    check(len(lines) == 1, f"--json {' '.join(args)}: want one line, got {out!r}")
    return json.loads(lines[0])


def proc_start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def start_watch(daemon):
    """bangerctl watch --json, returned once bangerd confirmed the subscription.

    The first event of every Watch is "subscribed": after it, no event can
    pass the watcher by.
    """
    w = subprocess.Popen([CTL, "--socket", daemon.socket, "--json", "watch"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    daemon.watchers.append(w)
    line = read_line(w, 10)
    check(line is not None, "watch printed nothing within 10 s")
    event = json.loads(line)["event"]
    check(event["kind"] == "subscribed" and "id" not in event, f"first event: {line!r}")
    return w


def read_line(proc, timeout):
    """The next line proc writes to stdout, or None after timeout."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        c = os.read(fd, 1)  # byte by byte: nothing past the line may be swallowed
        if not c:
            return buf.decode() or None
        buf += c
    return buf.decode()


# --- cases -------------------------------------------------------------------------

def case_lifecycle():
    """register, list, set, get, alive, the exit seen by watch, alive again, clear, unregister."""
    require_root()
    d = Session()
    k = Kernel("ctl")
    try:
        api_sock = os.path.join(d.api_root, "vm1", "api.sock")
        tap = k.tap("0")  # a real link: SetHandles records its ifindex
        loop_file = os.path.join(d.loop_root, "vm1.ext4")
        out = ctl_ok(d, "register", "vm1", "--api-sock", api_sock, "--tap", tap,
                     "--loop-file", loop_file, "--dm", "bangertest-vm1", "--on-exit", "keep")
        check("state:" in out and "starting" in out, f"register output:\n{out}")

        # list as a table: a header and one row, the planned resources shown
        lines = ctl_ok(d, "list").splitlines()
        check(lines[0].split() == ["ID", "STATE", "PID", "TAP", "LOOPS", "DM", "API-SOCK"],
              f"list header: {lines[0]!r}")
        check(len(lines) == 2, f"list: {lines}")
        check(lines[1].split() == ["vm1", "starting", "-", tap, loop_file, "bangertest-vm1",
                                   api_sock], f"list row: {lines[1]!r}")
        vms = ctl_json(d, "list")["vms"]
        check(len(vms) == 1 and vms[0]["id"] == "vm1" and vms[0]["state"] == "starting",
              f"list --json: {vms}")
        check(vms[0]["api_sock"] == api_sock and vms[0]["on_exit"] == "keep", f"{vms}")
        check(vms[0]["planned"] == {"tap": tap, "loop_files": [loop_file],
                                    "dm": ["bangertest-vm1"]}, f"planned: {vms[0]}")
        check("handles" not in vms[0], f"handles before set: {vms[0]}")

        # set: bangerd has the helper verify the stub, then records what it found
        stub = d.stub(api_sock)
        loop = k.loop(loop_file)  # a real attach: SetHandles records its diskseq
        reply = ctl_json(d, "set", "vm1", str(stub.pid), "--tap", tap,
                         "--loop", loop, "--dm", "bangertest-vm1")
        vm = reply["vm"]
        check(vm["state"] == "running", f"set: {reply}")
        h = vm["handles"]
        check(h["pid"] == stub.pid, f"set: pid {h['pid']}, want {stub.pid}")
        check(h["start_time"] == proc_start_time(stub.pid),
              f"start_time {h['start_time']} is not the stub's {proc_start_time(stub.pid)}")
        check(h["boot_id"] == boot_id(), f"boot_id {h['boot_id']}")
        check(h["tap"] == tap and h["tap_ifindex"] == ifindex_of(tap) and
              h["loops"] == [loop] and h["loop_diskseq"] == [diskseq_of(loop)] and
              h["dm"] == ["bangertest-vm1"],
              f"handles: {h}")
        check(reply["persisted"] is True, f"persisted: {reply}")

        out = ctl_ok(d, "get", "vm1")
        check("pid:" in out and str(stub.pid) in out and loop in out, f"get:\n{out}")
        check(ctl_json(d, "get", "vm1")["handles"] == h, "get --json differs from set's reply")
        row = ctl_ok(d, "list").splitlines()[1].split()
        check(row[:3] == ["vm1", "running", str(stub.pid)] and row[4] == loop,
              f"list row after set: {row}")

        rc, out, err = ctl(d, "alive", "vm1")
        check(rc == 0 and out == "alive\n", f"alive: exit {rc} {out!r} {err!r}")

        # The exit is seen at once (a pidfd, not polling) and reaches watchers.
        watch = start_watch(d)
        stub.kill()
        line = read_line(watch, 10)
        check(line is not None, "watch printed nothing within 10 s of the stub's death")
        event = json.loads(line)["event"]
        check(event["kind"] == "exited" and event["id"] == "vm1" and
              event.get("pid") == stub.pid, f"first event: {line!r}")
        print(f"watch: {line.strip()}")

        rc, out, _ = ctl(d, "alive", "vm1")
        check(rc == 1 and out == "dead\n", f"alive after exit: exit {rc} {out!r}")
        rc, out, _ = ctl(d, "--json", "alive", "vm1")
        check(rc == 1 and json.loads(out) == {"alive": "dead"}, f"alive --json: {rc} {out!r}")
        ctl_ok(d, "clear", "vm1")
        rc, _, err = ctl(d, "get", "vm1")
        check(rc == 3 and "NoHandles" in err, f"get after clear: exit {rc} {err!r}")
        out = ctl_ok(d, "unregister", "vm1")
        check(out == "", f"unregister prints nothing: {out!r}")
        check(ctl_ok(d, "list").splitlines()[1:] == [], "list after unregister")
        check(ctl_json(d, "list") == {"vms": []}, "list --json after unregister")
    finally:
        k.cleanup()  # before the files go: losetup -j finds loops by their backing file
        d.finish()


def case_set_verification():
    """set is refused for a process that is not the VM's firecracker."""
    require_root()
    d = Session()
    try:
        api_sock = os.path.join(d.api_root, "vm2", "api.sock")
        ctl_ok(d, "register", "vm2", "--api-sock", api_sock)
        other = d.stub(api_sock, STUB_OTHER)
        rc, _, err = ctl(d, "set", "vm2", str(other.pid))
        check(rc == 3 and "NotFirecracker" in err, f"not-firecracker: exit {rc} {err!r}")
        elsewhere = d.stub(os.path.join(d.api_root, "vm3", "api.sock"))
        rc, _, err = ctl(d, "set", "vm2", str(elsewhere.pid))
        check(rc == 3 and "NotFirecracker" in err, f"other api sock: exit {rc} {err!r}")
        elsewhere.kill()
        rc, _, err = ctl(d, "set", "vm2", str(elsewhere.pid))
        check(rc == 3 and "cannot open pid" in err and str(elsewhere.pid) in err,
              f"dead pid: exit {rc} {err!r}")
        check(ctl_json(d, "list")["vms"][0]["state"] == "starting", "refused sets changed state")
    finally:
        d.finish()


def case_watch_end():
    """watch ends with exit 0 when bangerd ends the stream (an orderly shutdown)."""
    require_root()
    d = Session()
    try:
        watch = start_watch(d)
        ctl_ok(d, "register", "vm4", "--api-sock", os.path.join(d.api_root, "vm4", "s"))
        line = read_line(watch, 10)
        check(line is not None and json.loads(line)["event"]["kind"] == "registered",
              f"registered event: {line!r}")
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = watch.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("watch still running 10 s after bangerd was told to stop")
        check(rc == 0, f"watch exit {rc}: {watch.stderr.read().decode()}")
        check(watch.stdout.read() == b"", "watch printed the empty final reply")
        check(d.daemon.wait_exit() == 0, f"bangerd's exit on SIGTERM:\n{d.daemon.log}")
    finally:
        d.finish()


def case_unknown_vm():
    """A VM that does not exist is a daemon error (3) naming NoSuchVM; so is no daemon."""
    require_root()
    d = Session()
    try:
        for cmd in ("get", "alive", "clear", "unregister"):
            rc, out, err = ctl(d, cmd, "nosuch")
            check(rc == 3, f"{cmd} nosuch: exit {rc}")
            check(err == f"bangerctl: {IFACE}NoSuchVM: no VM has the id nosuch\n",
                  f"{cmd} nosuch stderr: {err!r}")
            check(out == "", f"{cmd} nosuch stdout: {out!r}")
        rc, _, err = ctl(d, "get", "bad/id")
        check(rc == 3 and "InvalidID" in err, f"invalid id: exit {rc} {err!r}")
        rc, _, err = ctl(d, "register", "vm5", "--api-sock", "/elsewhere/api.sock")
        check(rc == 3 and "PolicyRefused" in err, f"policy: exit {rc} {err!r}")
    finally:
        d.finish()
    gone = d.socket
    rc, _, err = ctl(None, "--socket", gone, "list")
    check(rc == 3 and gone in err and "No such file or directory" in err,
          f"unreachable socket: exit {rc} {err!r}")
    env = dict(os.environ, BANGER_SOCKET=gone)
    r = subprocess.run([CTL, "status"], env=env, capture_output=True, timeout=10)
    check(r.returncode == 3 and gone in r.stderr.decode(), "BANGER_SOCKET is used")


def case_usage_errors():
    """Exit 2 with a one-line hint, before any connection is tried."""
    nowhere = "/nonexistent/bangerd.sock"
    bad = [
        [],
        ["frobnicate"],
        ["get"],
        ["get", "a", "b"],
        ["list", "extra"],
        ["set", "vm1"],
        ["set", "vm1", "12x"],
        ["set", "vm1", "-5"],
        ["set", "vm1", "99999999999"],
        ["register", "vm1"],
        ["register", "vm1", "--api-sock", "/a", "--on-exit", "sometimes"],
        ["register", "vm1", "--api-sock"],
        ["list", "--tap", "t"],
        ["get", "vm1", "--loop", "/dev/loop0"],
        ["set", "vm1", "1", "--loop-file", "/x"],
        ["--bogus", "list"],
        ["metrics", "extra"],
        ["list", "--output", "/tmp/x.prom"],
        ["metrics", "--output"],
        ["metrics", "--output", "a", "--output", "b"],
    ]
    for args in bad:
        rc, out, err = ctl(None, "--socket", nowhere, *args)
        check(rc == 2, f"{args}: exit {rc}, want 2 ({err!r})")
        check(err.count("\n") == 1 and err.startswith("bangerctl: ") and "--help" in err,
              f"{args}: want a one-line hint, got {err!r}")
        check(out == "", f"{args}: stdout {out!r}")
    rc, out, _ = ctl(None, "--help")
    check(rc == 0, f"--help exit {rc}")
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "OPTIONS", "ENVIRONMENT", "EXIT STATUS",
                    "EXAMPLES"):
        check(f"\n{section}\n" in "\n" + out, f"--help lacks {section}")
    check("BANGER_SOCKET" in out and "--json" in out and "--socket" in out, "--help options")
    for cmd in ("register", "set", "get", "alive", "clear", "teardown", "unregister", "list",
                "reconcile", "watch", "status", "metrics"):
        check(f"\n    {cmd}" in out, f"--help lacks the command {cmd}")
    rc, out, _ = ctl(None, "--version")
    check(rc == 0 and out == f"bangerctl {VERSION}\n",
          f"--version: {rc} {out!r}, want 'bangerctl {VERSION}' (meson.project_version())")


def answer_once(listener, reply, got):
    """Accept one connection on listener, read one call, answer reply (NUL-terminated)."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        buf = b""
        while b"\0" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        got.append(buf)
        conn.sendall(reply + b"\0")


def case_malformed_replies():
    """A reply whose envelope is wrong (not an object; error, parameters or continues of the
    wrong type) is refused: exit 3, one line that says what was wrong, nothing on stdout;
    a well-formed error reply is said as such."""
    cases = [
        (b"[1]", "the reply is not a JSON object"),
        (b'{"error":5}', '"error" is not a string'),
        (b'{"parameters":5}', '"parameters" is not an object'),
        (b'{"parameters":{},"continues":"yes"}', '"continues" is not a boolean'),
        (b'{"error":"io.banger.Handles.NoSuchVM","parameters":{"id":"vm1"}}',
         "io.banger.Handles.NoSuchVM"),
    ]
    tmp = tempfile.mkdtemp(prefix="banger-test-ctl-")
    path = os.path.join(tmp, "fake.sock")
    try:
        for reply, said in cases:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(path)
                listener.listen(1)
                listener.settimeout(10)
                got = []
                server = threading.Thread(target=answer_once, args=(listener, reply, got))
                server.start()
                rc, out, err = ctl(None, "--socket", path, "get", "vm1")
                server.join(timeout=10)
                check(not server.is_alive(), f"{reply!r}: bangerctl never called")
            os.unlink(path)
            check(got and b'"io.banger.Handles.GetHandles"' in got[0], f"the call: {got}")
            check(rc == 3 and out == "", f"{reply!r}: exit {rc}, stdout {out!r}, want 3 and none")
            check(err.count("\n") == 1 and said in err, f"{reply!r}: stderr {err!r}, want {said!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def case_status():
    require_root()
    d = Session()
    try:
        version = VERSION
        out = ctl_ok(d, "status")
        kv = {}
        for line in out.splitlines():
            key, _, value = line.partition(":")
            kv[key] = value.strip()
        check(kv.get("version") == version, f"status version: {out}")
        check(kv.get("helper privileged") == "yes", f"status helper: {out}")
        check(kv.get("vms") == "0" and "uptime" in kv and "calls" in kv, f"status: {out}")
        st = ctl_json(d, "status")
        check(st["version"] == version and st["helper_privileged"] is True, f"{st}")
        check(st["counts"] == {"vms": 0, "starting": 0, "running": 0, "stopped": 0,
                               "liveness_unknown": 0}, f"{st}")
        with open(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children") as f:
            check(st["helper_pid"] == int(f.read().split()[0]), f"helper_pid: {st}")
        check(st["uptime_usec"] > 0 and st["counters"]["calls"] >= 2, f"{st}")
    finally:
        d.finish()


CASES = {
    "lifecycle": case_lifecycle,
    "set-verification": case_set_verification,
    "watch-end": case_watch_end,
    "unknown-vm": case_unknown_vm,
    "usage-errors": case_usage_errors,
    "status": case_status,
    "malformed-replies": case_malformed_replies,
}

if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail(f"usage: {sys.argv[0]} {{{','.join(CASES)}}} BANGERCTL")
    if not VERSION:
        fail("BANGER_PROJECT_VERSION is not set (run through meson test)")
    CTL = os.path.abspath(sys.argv[2])
    run_cases(CASES)
