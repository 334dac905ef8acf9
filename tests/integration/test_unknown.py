#!/usr/bin/env python3
"""Liveness that cannot be established is `unknown`, and unknown tears nothing down.

The helper proxy (tests/stub/helper_proxy.c) stands between bangerd and the
real helper and makes the hard cases happen on purpose: a SCAN that could not
inspect every process, a helper that dies with a TEARDOWN in flight, a PROBE
that answers late. Real taps, real loops, real stub firecrackers; one case
per meson test (argv[1]); every wait is for an event, with a bound.
"""
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import IFACE, Daemon, check, run_cases, wait_pid_gone  # noqa: E402
from test_reconcile import link_exists, loops_on, with_fixture  # noqa: E402

PROXY = os.environ.get("BANGER_HELPER_PROXY", "")


def through_proxy(f, kill=True, **env):
    """Restart bangerd (kill -9 unless it is down) with the proxy as its helper."""
    check(PROXY and os.access(PROXY, os.X_OK), "BANGER_HELPER_PROXY must name the proxy")
    if kill:
        f.d.proc.kill()
        f.d.wait_exit()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        f.d = Daemon(root=f.d.dir, extra=["--helper", PROXY])
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    f.d.own_dir = False  # the last daemon on this root removes it
    f.c = f.d.client()


def resources_held(f, vm_id, tap, when):
    check(link_exists(tap), f"{when}: tap {tap} of {vm_id} was torn down")
    for i in range(2):
        img = f.image(f"{vm_id}-{i}.img")
        check(len(loops_on(img)) == 1, f"{when}: loop on {img}: {loops_on(img)}")


def reconcile_entry(f, vm_id):
    report = f.c.call(IFACE + "Reconcile")
    return {v["id"]: v for v in report["vms"]}[vm_id]


def last_daemon(f):
    f.d = Daemon(root=f.d.dir)
    f.d.own_dir = True
    f.c = f.d.client()


@with_fixture("ui")
def case_uninspected_scan(f):
    """A scan that could not inspect every process cannot prove a VM dead: the VM it did
    not find is unknown, keeps everything, and the one it found is kept."""
    s_live, _, _ = f.vm_with_resources("vm-ui-live")
    s_dead, tap_dead, _ = f.vm_with_resources("vm-ui-dead")
    f.d.proc.kill()
    f.d.wait_exit()
    s_dead.kill()  # dies while bangerd is down
    through_proxy(f, kill=False, BANGER_PROXY_UNINSPECTED="1")
    check("vm vm-ui-dead unknown" in f.d.log, f"startup reconcile:\n{f.d.log}")
    dead = reconcile_entry(f, "vm-ui-dead")
    check(dead["action"] == "unknown" and "inspect" in dead.get("reason", ""), str(dead))
    live = reconcile_entry(f, "vm-ui-live")
    check(live["action"] == "kept" and live["pid"] == s_live.pid, str(live))
    alive = f.c.call(IFACE + "IsAlive", {"id": "vm-ui-dead"})["alive"]
    check(alive == "unknown", f"IsAlive of the VM the scan could not rule on: {alive}")
    check(f.c.call(IFACE + "IsAlive", {"id": "vm-ui-live"})["alive"] == "alive", "live")
    resources_held(f, "vm-ui-dead", tap_dead, "with an incomplete scan")
    check(os.path.exists(os.path.join(f.d.vm_dir("vm-ui-dead"), "handles.json")),
          "handles.json of the unknown VM is kept")
    # A complete scan (the real helper, no proxy) proves it dead and tears it down.
    f.d.proc.kill()
    f.d.wait_exit()
    last_daemon(f)
    dead = {v["id"]: v for v in f.c.call(IFACE + "List")["vms"]}["vm-ui-dead"]
    check(dead["state"] == "stopped", f"after a complete scan: {dead}")
    f.nothing_left(tap_dead, [f.image(f"vm-ui-dead-{i}.img") for i in range(2)])
    print("incomplete scan: dead VM unknown, tap and 2 loops kept; complete scan: torn down")


@with_fixture("md")
def case_helper_dies_mid_teardown(f):
    """The helper dies with a TEARDOWN in flight: the caller hears the helper is gone (never
    torn_down), the record keeps what it names, and the next helper finishes the job."""
    _, tap, _ = f.vm_with_resources("vm-md1", on_exit="keep")
    fifo = os.path.join(f.d.dir, "proxy.fifo")
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists before the proxy writes
    try:
        through_proxy(f, BANGER_PROXY_HOLD_TYPE="7", BANGER_PROXY_FIFO=fifo)
        stub = f.stubs[-1]
        watcher = f.d.client().watch()
        os.kill(stub.pid, signal.SIGKILL)
        ev = watcher.next_event()
        check(ev["kind"] == "exited", f"exit seen: {ev}")
        f.c.send(IFACE + "Teardown", {"id": "vm-md1"})
        ready, _, _ = select.select([held], [], [], 10)
        check(ready and os.read(held, 64) == b"held\n", "the proxy holds the TEARDOWN")
    finally:
        os.close(held)
    proxy_pid = f.d.helper_pid()
    with open(f"/proc/{proxy_pid}/task/{proxy_pid}/children") as fh:
        real = [int(p) for p in fh.read().split()]
    os.kill(proxy_pid, signal.SIGKILL)  # the helper is gone mid-teardown
    check(all(wait_pid_gone(p, 5) for p in real), "the real helper outlived its proxy")
    reply = f.c.receive()
    check("error" in reply and reply["error"] == IFACE + "HelperUnavailable",
          f"Teardown answered {reply}, want HelperUnavailable (never torn_down)")
    rc = f.d.wait_exit(timeout=10)
    check(rc != 0, f"bangerd exited {rc} after losing its helper")
    resources_held(f, "vm-md1", tap, "after the helper died mid-teardown")
    # The next helper: Teardown is idempotent and finishes it.
    last_daemon(f)
    out = f.c.call(IFACE + "Teardown", {"id": "vm-md1"})
    statuses = {r["status"] for r in out.get("results", [])}
    check(statuses <= {"removed", "absent"}, f"second teardown: {out}")
    f.nothing_left(tap, [f.image(f"vm-md1-{i}.img") for i in range(2)])
    print(f"TEARDOWN held, helper killed: HelperUnavailable, bangerd exit {rc}, everything "
          "kept; the next helper tore it down")


@with_fixture("sp")
def case_slow_probe(f):
    """A PROBE that answers late delays only its own call: IsAlive and List answer from the
    cache at once, and the late answer is still right."""
    s_live, _, _ = f.vm_with_resources("vm-sp-live")
    through_proxy(f, BANGER_PROXY_DELAY_TYPE="4", BANGER_PROXY_DELAY_MS="1500")
    f.c.call(IFACE + "Register", {"id": "vm-sp-new", "api_sock": f.sock("vm-sp-new")})
    s_new = f.stub("vm-sp-new")
    started = time.monotonic()
    f.c.send(IFACE + "SetHandles", {"id": "vm-sp-new", "pid": s_new.pid})
    other = f.d.client()
    worst = 0.0
    for _ in range(10):
        t = time.monotonic()
        alive = other.call(IFACE + "IsAlive", {"id": "vm-sp-live"})["alive"]
        listed = other.call(IFACE + "List")["vms"]
        worst = max(worst, time.monotonic() - t)
        check(alive == "alive" and len(listed) == 2, f"{alive} {listed}")
    check(worst < 0.1, f"IsAlive+List took {worst * 1000:.1f} ms behind a slow probe")
    reply = f.c.receive()
    took = time.monotonic() - started
    check("error" not in reply and reply["parameters"]["vm"]["handles"]["pid"] == s_new.pid,
          f"the late probe's answer: {reply}")
    check(took >= 1.5, f"SetHandles took {took:.2f} s: the probe was not delayed")
    entry = reconcile_entry(f, "vm-sp-new")
    check(entry["action"] == "kept" and entry["pid"] == s_new.pid, str(entry))
    f.d.proc.kill()
    f.d.wait_exit()
    last_daemon(f)
    print(f"probe delayed 1500 ms: SetHandles {took * 1000:.0f} ms, IsAlive+List at worst "
          f"{worst * 1000:.1f} ms meanwhile; reconcile kept both")


@with_fixture("pa")
def case_pidfd_says_alive(f):
    """A scan that finds nobody cannot overrule the pidfd bangerd watches: a live VM whose
    api socket file was removed (a manager's clean-up gone wrong) is kept, not torn down."""
    s, tap, _ = f.vm_with_resources("vm-pa1")
    os.unlink(f.sock("vm-pa1"))  # the listener lives on; no path leads to it any more
    entry = reconcile_entry(f, "vm-pa1")
    check(entry["action"] == "kept" and entry.get("pid") == s.pid, str(entry))
    check(f.c.call(IFACE + "IsAlive", {"id": "vm-pa1"})["alive"] == "alive", "still alive")
    resources_held(f, "vm-pa1", tap, "after a scan that did not find it")
    print("socket file removed: the scan found nobody, the watched pidfd kept the VM")


CASES = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items())
         if name.startswith("case_")}

if __name__ == "__main__":
    run_cases(CASES)
