#!/usr/bin/env python3
"""A stuck helper never hangs bangerd (issue 12), against the real binaries.

Every request to banger-privhelper has a deadline (helper_*_timeout_ms). The
helper is made stuck with SIGSTOP (the tests run as root), or, for the
start-up SCAN, by the helper proxy holding that one request. Each case
measures how long callers waited and prints it. Real taps and loops where a
teardown is involved. Deadlines are set small by flag so that the cases are
quick; every wait is for an event and bounded. One case per run (argv[1]).
"""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (BANGERD, HELPER, IFACE, TEST_USER, Daemon, Kernel, Stub,  # noqa: E402
                        check, die_with_parent, fail, link_exists, loops_on, require_root,
                        run_cases, sh, skip, wait_listening, wait_or_kill, wait_pid_gone,
                        wait_until)

PROBE_MS, SCAN_MS, TEARDOWN_MS = 500, 1000, 1000
DEADLINE_FLAGS = ["--helper-probe-timeout-ms", str(PROBE_MS),
                  "--helper-scan-timeout-ms", str(SCAN_MS),
                  "--helper-teardown-timeout-ms", str(TEARDOWN_MS)]
EXIT_HELPER, EXIT_HELPER_STUCK = 3, 4
READ_BOUND_S = 0.1  # what a cache read (IsAlive, List) may take while the helper is stuck
SLACK_S = 1.0       # a stuck call is answered within its deadline + this



class Stopped:
    """Processes the test SIGSTOPs, each held by a pidfd so that the clean-up can never signal
    a recycled pid: whatever survives the case is woken and killed."""

    def __init__(self):
        self.fds = {}

    def stop(self, pid):
        self.fds[pid] = os.pidfd_open(pid)
        signal.pidfd_send_signal(self.fds[pid], signal.SIGSTOP)
        return pid

    def release_all(self):
        for fd in self.fds.values():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    signal.pidfd_send_signal(fd, sig)
                except ProcessLookupError:
                    break
            os.close(fd)
        self.fds = {}


def exit_status(d, timeout):
    """bangerd's exit status, as soon as it exits. (Daemon.wait_exit also waits for the end of
    the log, which a stopped helper, sharing bangerd's stderr, holds open.)"""
    try:
        return d.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"bangerd did not exit within {timeout} s; log:\n{d.log}")


def resume_and_reap(d, *pids):
    """bangerd is gone; the helper it left stopped is still there (root: bangerd cannot signal
    it, and its PR_SET_PDEATHSIG does not cross bangerd's privilege drop). Resumed, it reads EOF
    on the socket bangerd dropped and ends: nothing is left. Then the log is whole."""
    for pid in pids:
        check(os.path.exists(f"/proc/{pid}"), f"pid {pid} is not there to resume")
        os.kill(pid, signal.SIGCONT)
    for pid in pids:
        check(wait_pid_gone(pid, 5), f"helper {pid} did not end on EOF once resumed")
    d.wait_exit()


def register_live(d, c, vm_id, stubs):
    """A running VM whose firecracker (a stub) is verified and watched."""
    api_sock = os.path.join(d.api_root, vm_id, "api.sock")
    c.call(IFACE + "Register", {"id": vm_id, "api_sock": api_sock})
    s = Stub(api_sock)
    stubs.append(s)
    c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid})
    return s


def cache_reads_while(d, until, live_id):
    """IsAlive, List, GetHandles and GetStatus, again and again until the monotonic time until:
    the worst answer time. They are answered from the cache: a stuck helper must not slow them."""
    reader = d.client()
    worst, n = 0.0, 0
    reads = ((IFACE + "IsAlive", {"id": live_id}), (IFACE + "List", {}),
             (IFACE + "GetHandles", {"id": live_id}), (IFACE + "GetStatus", {}))
    while time.monotonic() < until:
        for method, params in reads:
            t = time.monotonic()
            reply = reader.call(method, params)
            worst = max(worst, time.monotonic() - t)
            n += 1
            if method.endswith("IsAlive"):
                check(reply["alive"] == "alive", f"IsAlive {live_id} while stuck: {reply}")
        time.sleep(0.02)
    reader.close()
    check(n >= 4, f"only {n} reads while the helper was stuck")
    check(worst < READ_BOUND_S, f"a cache read took {1000 * worst:.1f} ms while stuck")
    return worst, n


def stuck_call(d, caller, method, params, op, deadline_ms, live_id, pipeline=()):
    """Send method while the helper is stopped; reads go on meanwhile. Returns (error
    parameters, seconds waited). pipeline: calls sent behind it on the same connection."""
    t0 = time.monotonic()
    # One write: the calls behind it are read with it, so they are the daemon's to answer.
    caller.send_raw(b"".join(json.dumps({"method": m, "parameters": p}).encode() + b"\0"
                             for m, p in [(method, params), *((m, {}) for m in pipeline)]))
    worst, n = cache_reads_while(d, t0 + 0.8 * deadline_ms / 1000, live_id)
    reply = caller.receive()
    waited = time.monotonic() - t0
    check(reply is not None, f"{method}: connection closed without an answer; log:\n{d.log}")
    check(reply.get("error") == IFACE + "HelperUnavailable",
          f"{method} with the helper stuck: {reply}")
    reason = reply["parameters"]["reason"]
    want = f"did not answer {op} within {deadline_ms} ms"
    check(want in reason, f"{method}: reason {reason!r} lacks {want!r}")
    check(deadline_ms / 1000 - 0.05 <= waited <= deadline_ms / 1000 + SLACK_S,
          f"{method} answered after {1000 * waited:.0f} ms; deadline {deadline_ms} ms")
    print(f"{method.split('.')[-1]}: HelperUnavailable after {1000 * waited:.0f} ms "
          f"({op} deadline {deadline_ms} ms): {reason!r}; {n} cache reads (IsAlive, List, "
          f"GetHandles, GetStatus) meanwhile, worst {1000 * worst:.1f} ms")
    return reply["parameters"], waited


# --- spawn mode: bangerd cannot start a root helper again; it answers, then exits 4 ----------


def spawn_stuck(op, deadline_ms, prepare, method_of, after=None):
    require_root()
    k = Kernel("sd", high_loops=True)
    d = Daemon(extra=DEADLINE_FLAGS)
    stubs, stopped = [], Stopped()
    try:
        c = d.client()
        register_live(d, c, "vm-live", stubs)
        method, params = method_of(prepare(d, c, k, stubs))
        watcher = d.client().watch()
        hp = d.helper_pid()
        st = c.call(IFACE + "GetStatus")
        check(st["helper_state"] == "ok" and st["helper_pid"] == hp, f"before: {st}")
        stopped.stop(hp)
        caller = d.client()
        # GetStatus and Reconcile pipelined behind the stuck call: answered during the drain,
        # after it. The Reconcile needs the helper, known stuck by then: the reason says so.
        _, waited = stuck_call(d, caller, method, params, op, deadline_ms, "vm-live",
                               pipeline=[IFACE + "GetStatus", IFACE + "Reconcile"])
        status = caller.receive()
        check(status and "parameters" in status, f"pipelined GetStatus: {status}")
        st = status["parameters"]
        check(st["helper_state"] == "stuck" and op in st.get("helper_problem", ""),
              f"GetStatus after the deadline: {st}")
        late = caller.receive()
        want = f"the helper is stuck: the helper did not answer {op} within {deadline_ms} ms"
        check(late and late.get("error") == IFACE + "HelperUnavailable"
              and late["parameters"].get("reason") == want,
              f"pipelined Reconcile after the deadline: {late}, want reason {want!r}")
        event = watcher.next_event()
        check(event["kind"] == "helper_stuck" and "id" not in event and
              f"{op} within {deadline_ms} ms" in event["detail"], f"event: {event}")
        t = time.monotonic()
        rc = exit_status(d, SLACK_S + 10)
        exit_after = time.monotonic() - t
        check(rc == EXIT_HELPER_STUCK, f"bangerd exited {rc}, want {EXIT_HELPER_STUCK}:\n{d.log}")
        print(f"answers read by the clients, then exit {rc} {1000 * exit_after:.0f} ms later")
        if after:
            after(d)  # while the helper is still stopped
        resume_and_reap(d, hp)
        check("bangerd cannot start another without privilege" in d.log, d.log)
        print(f"stopped helper {hp} ended on EOF once resumed")
        if after:
            after(d, resumed=True)
    finally:
        stopped.release_all()
        for s in stubs:
            s.kill()
        k.cleanup()
        d.finish()


def prepare_set(d, c, k, stubs):
    api_sock = os.path.join(d.api_root, "vm-set", "api.sock")
    c.call(IFACE + "Register", {"id": "vm-set", "api_sock": api_sock})
    s = Stub(api_sock)
    stubs.append(s)
    return s.pid


def case_spawn_stuck_set_handles():
    spawn_stuck("PROBE", PROBE_MS, prepare_set,
                lambda pid: (IFACE + "SetHandles", {"id": "vm-set", "pid": pid}))


def prepare_teardown(d, c, k, stubs):
    """A VM whose manager crashed before SetHandles: its planned (real) tap awaits teardown."""
    tap = k.tap("td")
    c.call(IFACE + "Register", {"id": "vm-td", "api_sock": os.path.join(d.api_root, "vm-td", "s"),
                                "planned": {"tap": tap}})
    return tap


def case_spawn_stuck_teardown():
    def untouched(d, resumed=False):
        if resumed:
            # The request was still queued to it, but bangerd had left: it must not act on it.
            check(link_exists(tap[0]), f"after SIGCONT the old helper ran the TEARDOWN that "
                  f"bangerd gave up on: tap {tap[0]} removed")
            print(f"after SIGCONT the old helper carried nothing out: tap {tap[0]} still there")
            return
        # The helper never ran it: the tap stands, and the record still plans it.
        check(link_exists(tap[0]), f"tap {tap[0]} is gone, although the helper was stopped")
        with open(os.path.join(d.vm_dir("vm-td"), "vm.json")) as f:
            rec = json.load(f)
        check(rec["state"] == "starting", f"the record after a teardown nobody did: {rec}")
        print(f"tap {tap[0]} still there; record still {rec['state']}")

    tap = []
    spawn_stuck("TEARDOWN", TEARDOWN_MS, lambda d, c, k, stubs: tap.append(
        prepare_teardown(d, c, k, stubs)), lambda _: (IFACE + "Teardown", {"id": "vm-td"}),
        after=untouched)


def case_spawn_stuck_reconcile():
    spawn_stuck("SCAN", SCAN_MS, lambda d, c, k, stubs: None,
                lambda _: (IFACE + "Reconcile", {}))


# --- split mode: a fresh helper per connection; bangerd replaces the stuck one ----------------


def wait_event(watcher, kind, seen):
    """Events up to and including the first of kind (bounded by the socket timeout)."""
    while True:
        e = watcher.next_event()
        seen.append(e)
        if e["kind"] == kind:
            return e


def case_split_stuck():
    require_root()
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        skip("systemd-socket-activate (Debian's systemd package) is not installed")
    k = Kernel("sp", high_loops=True)
    tmp = tempfile.mkdtemp(prefix="banger-test-deadline-split-")
    os.chmod(tmp, 0o755)
    helper_sock = os.path.join(tmp, "privhelper.sock")
    # banger-privhelper.socket: Accept=yes, a fresh helper per connection on fd 3.
    helper_unit = subprocess.Popen(
        [activate, "--seqpacket", "--accept", "-l", helper_sock, HELPER,
         "--tap-prefix", "bgt", "--dm-prefix", "bangertest-", "--dm-uuid-prefix", "BANGERT-",
         "--loop-root", os.path.join(tmp, "images"), "--api-sock-root", os.path.join(tmp, "vms"),
         "--daemon-user", TEST_USER],
        preexec_fn=die_with_parent,  # gone with the test, however the test ends
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d, stubs, stopped = None, [], Stopped()
    try:
        wait_listening(helper_sock, 5, "the helper socket")
        os.chmod(helper_sock, 0o666)
        d = Daemon(root=tmp, extra=["--helper-socket", helper_sock, *DEADLINE_FLAGS])
        c = d.client()
        watcher = d.client().watch()
        register_live(d, c, "vm-live", stubs)
        set_pid = prepare_set(d, c, k, stubs)

        def stall(method, params, op, deadline_ms):
            st = c.call(IFACE + "GetStatus")
            check(st["helper_state"] == "ok", f"before stopping it: {st}")
            hp = st["helper_pid"]
            stopped.stop(hp)
            caller = d.client()
            stuck_call(d, caller, method, params, op, deadline_ms, "vm-live")
            caller.close()
            seen = []
            t = time.monotonic()
            stuck = wait_event(watcher, "helper_stuck", seen)
            check(f"{op} within {deadline_ms} ms" in stuck["detail"], str(stuck))
            replaced = wait_event(watcher, "helper_replaced", seen)
            took = time.monotonic() - t
            st = c.call(IFACE + "GetStatus")
            check(st["helper_state"] == "ok" and st["helper_pid"] == replaced["pid"] and
                  st["helper_pid"] not in stopped.fds, f"after the replacement: {st}")
            check(st["counters"]["helper_replacements"] == len(stopped.fds), str(st))
            print(f"  stuck helper {hp} replaced by {st['helper_pid']} (HELLO + reconcile) "
                  f"{1000 * took:.0f} ms after the answer; events {[e['kind'] for e in seen]}")
            return seen

        stall(IFACE + "SetHandles", {"id": "vm-set", "pid": set_pid}, "PROBE", PROBE_MS)
        tap = prepare_teardown(d, c, k, stubs)  # now: a replacement's reconcile would take it
        seen = stall(IFACE + "Teardown", {"id": "vm-td"}, "TEARDOWN", TEARDOWN_MS)
        # The stuck helper never did the teardown; the replacement's reconcile finished it.
        kinds = [(e["kind"], e.get("id")) for e in seen]
        check(("teardown_failed", "vm-td") in kinds and ("torn_down", "vm-td") in kinds,
              f"events around the stuck teardown: {kinds}")
        check(not link_exists(tap), f"tap {tap} left after the replacement's reconcile")
        stall(IFACE + "Reconcile", {}, "SCAN", SCAN_MS)

        # The fourth helper serves the next call.
        vm = c.call(IFACE + "SetHandles", {"id": "vm-set", "pid": set_pid})["vm"]
        check(vm["state"] == "running" and vm["handles"]["pid"] == set_pid, str(vm))
        check(c.call(IFACE + "IsAlive", {"id": "vm-set"})["alive"] == "alive", "vm-set alive")
        report = c.call(IFACE + "Reconcile")
        check(sorted(v["action"] for v in report["vms"]) == ["clean", "kept", "kept"],
              f"a reconcile with the new helper: {report}")
        # The stopped helpers wake to EOF and end: nothing is left behind.
        for hp in stopped.fds:
            os.kill(hp, signal.SIGCONT)
        for hp in stopped.fds:
            check(wait_pid_gone(hp, 5), f"stopped helper {hp} did not end after SIGCONT")
        check(d.stop() == 0, f"clean stop after three replacements:\n{d.log}")
        print(f"split mode: 3 stuck helpers {list(stopped.fds)} replaced; SetHandles served by "
              "the 4th; each old one exited on EOF once resumed")
    finally:
        stopped.release_all()
        for s in stubs:
            s.kill()
        if d:
            d.finish()
        helper_unit.terminate()
        wait_or_kill(helper_unit, 10)
        k.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# --- start-up: a SCAN that is never answered ends before READY --------------------------------


def case_startup_scan_stuck():
    require_root()
    proxy = os.environ.get("BANGER_HELPER_PROXY", "")
    check(proxy and os.access(proxy, os.X_OK), "BANGER_HELPER_PROXY must name the proxy")
    k = Kernel("ss", high_loops=True)
    d = Daemon()
    d.own_dir = False
    stubs, notify, stopped = [], None, Stopped()
    try:
        # A VM with a real tap and loop, then bangerd and the VM die: the records need a SCAN.
        c = d.client()
        tap = k.tap("ss")
        img = os.path.join(d.loop_root, "ss.img")
        loop = k.loop(img)
        api_sock = os.path.join(d.api_root, "vm-ss", "api.sock")
        c.call(IFACE + "Register", {"id": "vm-ss", "api_sock": api_sock})
        s = Stub(api_sock)
        stubs.append(s)
        c.call(IFACE + "SetHandles", {"id": "vm-ss", "pid": s.pid, "tap": tap, "loops": [loop]})
        d.proc.kill()
        d.wait_exit()
        s.kill()

        notify_path = os.path.join(d.dir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        os.chmod(notify_path, 0o666)  # bangerd notifies as the test user
        # The proxy is the helper bangerd sees: it answers HELLO (relayed) and holds the SCAN,
        # then says so on the FIFO. Race-free: the SCAN is never answered, whatever the timing.
        fifo = os.path.join(d.dir, "proxy.fifo")
        os.mkfifo(fifo)
        held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        env = {"BANGER_PROXY_HOLD_TYPE": "5", "BANGER_PROXY_FIFO": fifo,
               "NOTIFY_SOCKET": notify_path}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            d = Daemon(root=d.dir, wait_ready=False,
                       extra=["--helper", proxy, "--helper-scan-timeout-ms", str(SCAN_MS)])
        finally:
            for key, value in saved.items():
                if value is None:
                    del os.environ[key]
                else:
                    os.environ[key] = value
        try:
            ready, _, _ = select.select([held], [], [], 10)
            check(ready, f"the proxy never held the SCAN within 10 s; log:\n{d.log}")
            check(os.read(held, 64) == b"held\n", "the proxy's announcement")
        finally:
            os.close(held)
        t0 = time.monotonic()
        proxy_pid = d.helper_pid()
        with open(f"/proc/{proxy_pid}/task/{proxy_pid}/children") as fh:
            real = [int(p) for p in fh.read().split()]
        stopped.stop(proxy_pid)  # and bangerd's helper is a stopped process, too
        check("ready:" not in d.log, "ready before the SCAN was answered")
        rc = exit_status(d, SCAN_MS / 1000 + SLACK_S + 5)
        waited = time.monotonic() - t0
        check(rc == EXIT_HELPER_STUCK, f"bangerd exited {rc}, want {EXIT_HELPER_STUCK}:\n{d.log}")
        resume_and_reap(d, proxy_pid)
        check(all(wait_pid_gone(p, 5) for p in real), f"the real helper {real} stayed")
        check(waited <= SCAN_MS / 1000 + SLACK_S,
              f"bangerd exited {1000 * waited:.0f} ms after the SCAN was held")
        want = f"did not answer SCAN within {SCAN_MS} ms"
        check(want in d.log and "before READY, nothing torn down" in d.log,
              f"no clear message:\n{d.log}")
        check("ready:" not in d.log, f"bangerd became ready:\n{d.log}")
        notify.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
        check(not any("READY=1" in m for m in messages), f"READY=1 was sent: {messages}")
        check(link_exists(tap) and loops_on(img) == [loop], "the dead VM's tap and loop were "
              f"touched: tap {link_exists(tap)}, loops {loops_on(img)}")
        check(os.path.exists(os.path.join(d.vm_dir("vm-ss"), "handles.json")),
              "handles.json of the dead VM is gone")
        line = next(x for x in d.log.splitlines() if "before READY" in x)
        print(f"SCAN held: bangerd exited {rc} {1000 * waited:.0f} ms later, no READY "
              f"(notifications {messages}), tap and loop still there; log: {line.strip()}")

        # The next start, with the real helper, finishes the job.
        d = Daemon(root=d.dir)
        wait_until(lambda: not link_exists(tap) and loops_on(img) == [], 5,
                   "the next start to tear the dead VM down")
        vm = d.client().call(IFACE + "List")["vms"][0]
        check(vm["state"] == "stopped" and "handles" not in vm, str(vm))
    finally:
        stopped.release_all()
        for s in stubs:
            s.kill()
        if notify:
            notify.close()
        k.cleanup()
        d.own_dir = True
        d.finish()


# --- a helper killed in the middle of a teardown ---------------------------------------------


def case_killed_mid_teardown():
    """A VM with a tap and two loops; the second loop is busy, so the helper spends its bounded
    ~0.5 s on it after detaching the first. It is SIGKILLed then: the reply says nobody knows
    what was removed (never torn_down), and the next helper finishes the teardown."""
    require_root()
    k = Kernel("kt", high_loops=True)
    d = Daemon()
    d.own_dir = False
    stubs, hold = [], None
    try:
        c = d.client()
        tap = k.tap("kt")
        files = [os.path.join(d.loop_root, f"kt-{i}.img") for i in range(2)]
        loops = [k.loop(f) for f in files]
        api_sock = os.path.join(d.api_root, "vm-kt", "api.sock")
        c.call(IFACE + "Register", {"id": "vm-kt", "api_sock": api_sock, "on_exit": "keep"})
        s = Stub(api_sock)
        stubs.append(s)
        c.call(IFACE + "SetHandles", {"id": "vm-kt", "pid": s.pid, "tap": tap, "loops": loops})
        watcher = d.client().watch()
        s.kill()
        check(watcher.next_event()["kind"] == "exited", "the VM exited")
        wait_until(lambda: c.call(IFACE + "List")["vms"][0]["state"] == "stopped", 5,
                   "the VM marked stopped (on_exit keep)")

        hold = os.open(loops[1], os.O_RDONLY)  # the second loop is in use
        autoclear = f"/sys/block/{os.path.basename(loops[1])}/loop/autoclear"
        hp = d.helper_pid()
        caller = d.client()
        t0 = time.monotonic()
        caller.send(IFACE + "Teardown", {"id": "vm-kt"})

        def in_retry():
            with open(autoclear) as f:
                return f.read().strip() == "1"
        # LOOP_CLR_FD on a busy loop sets autoclear: the helper is now in its bounded wait.
        wait_until(in_retry, 5, "the helper to reach the busy loop")
        os.kill(hp, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        reply = caller.receive()
        check(reply and reply.get("error") == IFACE + "HelperUnavailable",
              f"Teardown with the helper killed mid-way: {reply} (killed {1000 * killed_at:.0f} "
              "ms in; if it answered with results, the kill came too late)")
        reason = reply["parameters"]["reason"]
        check("TEARDOWN" in reason and "not known" in reason, f"reason {reason!r}")
        events = []
        while True:  # the drain ends the stream after the events
            r = watcher.receive()
            if r is None or "event" not in r.get("parameters", {}):
                break
            events.append(r["parameters"]["event"])
        kinds = [e["kind"] for e in events]
        check("helper_gone" in kinds and "teardown_failed" in kinds and "torn_down" not in kinds,
              f"events: {events}")
        rc = d.wait_exit()
        check(rc == EXIT_HELPER, f"bangerd exited {rc}, want {EXIT_HELPER}:\n{d.log}")
        # What the kernel says: the first loop went, the busy one and the tap did not.
        check(loops_on(files[0]) == [], f"first loop {loops_on(files[0])}")
        check(loops_on(files[1]) == [loops[1]] and link_exists(tap),
              f"busy loop {loops_on(files[1])}, tap {link_exists(tap)}")
        check(os.path.exists(os.path.join(d.vm_dir("vm-kt"), "handles.json")),
              "handles.json was cleared although the teardown never finished")
        print(f"helper killed {1000 * killed_at:.0f} ms into TEARDOWN: {reason!r}; "
              f"events {kinds}; bangerd exit {rc}; loop 1 detached, loop 2 busy, tap left")

        os.close(hold)  # autoclear now detaches the second loop
        hold = None
        wait_until(lambda: loops_on(files[1]) == [], 5, "the busy loop to detach on last close")
        d = Daemon(root=d.dir)
        c = d.client()
        results = c.call(IFACE + "Teardown", {"id": "vm-kt"})["results"]
        got = [(r["kind"], r["status"]) for r in results]
        check(got == [("loop", "absent"), ("loop", "absent"), ("tap", "removed")],
              f"the next helper's teardown: {results}")
        vm = c.call(IFACE + "List")["vms"][0]
        check(vm["state"] == "stopped" and "handles" not in vm, str(vm))
        check(not link_exists(tap), "tap left")
        print(f"next bangerd + helper finished it: {got}")
    finally:
        if hold is not None:
            os.close(hold)
        for s in stubs:
            s.kill()
        k.cleanup()
        d.own_dir = True
        d.finish()


# --- configuration ------------------------------------------------------------------------------


def case_config_keys():
    require_root()
    out = subprocess.run([BANGERD, "--help"], capture_output=True, text=True, timeout=10).stdout
    for op in ("hello", "probe", "scan", "teardown"):
        check(f"--helper-{op}-timeout-ms MS" in out, f"--help lacks helper-{op}-timeout-ms:\n{out}")
    bad = [("helper_probe_timeout_ms = 50\n", ":1: bad value for helper_probe_timeout_ms"),
           ("helper_scan_timeout_ms = 10s\n", ":1: bad value for helper_scan_timeout_ms"),
           ("helper_teardown_timeout_ms = 600001\n", ":1: bad value for helper_teardown_timeout_ms")]
    for text, needle in bad:
        d = Daemon(config_text=text, wait_ready=False)
        try:
            check(d.wait_exit() == 2, f"{text!r} accepted")
            check(needle in d.log, f"{text!r}: log lacks {needle!r}:\n{d.log}")
        finally:
            d.finish()
    good = "".join(f"helper_{op}_timeout_ms = {ms}\n" for op, ms in
                   (("hello", 5000), ("probe", 1500), ("scan", 8000), ("teardown", 20000)))
    d = Daemon(config_text=good)
    try:
        check(d.stop() == 0, f"a config with every deadline key:\n{d.log}")
    finally:
        d.finish()


CASES = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items())
         if name.startswith("case_")}

if __name__ == "__main__":
    run_cases(CASES)
