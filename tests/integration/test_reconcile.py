#!/usr/bin/env python3
"""Teardown, exit watching and reconcile against real kernel objects.

Real tap devices (ip tuntap) and real loop devices (losetup) on files under
the loop root, stub firecrackers for VMs, the real bangerd and helper. Each
case checks with the kernel's own tools that nothing leaked. One case per
meson test (argv[1]); every wait is for an event and bounded.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (IFACE, Daemon, Kernel, Stub, check, diskseq_of, fail,  # noqa: E402
                        ifindex_of, link_exists, loops_on, require_root, run_cases, sh, skip,
                        wait_until)


class Fixture:
    def __init__(self, tag):
        require_root()
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun: cannot create tap devices here")
        self.k = Kernel(tag)
        self.d = Daemon()
        self.c = self.d.client()
        self.stubs = []

    def sock(self, vm_id):
        return os.path.join(self.d.api_root, vm_id, "api.sock")

    def image(self, name):
        return os.path.join(self.d.loop_root, name)

    def stub(self, vm_id):
        s = Stub(self.sock(vm_id))
        self.stubs.append(s)
        return s

    def vm_with_resources(self, vm_id, **register):
        """A running VM holding a real tap and two real loops."""
        tap = self.k.tap(vm_id[-3:])
        loops = [self.k.loop(self.image(f"{vm_id}-{i}.img")) for i in range(2)]
        self.c.call(IFACE + "Register", {"id": vm_id, "api_sock": self.sock(vm_id), **register})
        s = self.stub(vm_id)
        self.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid, "tap": tap, "loops": loops})
        return s, tap, loops

    def restart(self, kill=True):
        if kill:
            self.d.proc.kill()
            self.d.wait_exit()
        else:
            check(self.d.stop() == 0, "clean stop")
        self.d = Daemon(root=self.d.dir)
        self.c = self.d.client()

    def nothing_left(self, tap, loops_files):
        check(not link_exists(tap), f"tap {tap} leaked")
        for f in loops_files:
            check(loops_on(f) == [], f"loop on {f} leaked: {loops_on(f)}")

    def close(self):
        for s in self.stubs:
            s.kill()
        self.c.close()
        self.k.cleanup()  # before the files go: losetup -j finds loops by their backing file
        self.d.finish()


def with_fixture(tag):
    def wrap(fn):
        def run():
            f = Fixture(tag)
            try:
                fn(f)
            finally:
                f.close()
        return run
    return wrap


@with_fixture("ex")
def case_exit_teardown(f):
    s, tap, loops = f.vm_with_resources("vm-ex1")
    files = [f.image(f"vm-ex1-{i}.img") for i in range(2)]
    watcher = f.d.client().watch()
    start = time.monotonic()
    os.kill(s.pid, signal.SIGKILL)
    exited = watcher.next_event()
    check(exited["kind"] == "exited" and exited["pid"] == s.pid, str(exited))
    torn = watcher.next_event()
    took_ms = 1000 * (time.monotonic() - start)
    check(torn["kind"] == "torn_down" and torn["id"] == "vm-ex1", str(torn))
    print(f"kill -9 -> exited -> torn_down in {took_ms:.1f} ms")
    check(took_ms < 100, f"torn_down {took_ms:.1f} ms after the kill")
    f.nothing_left(tap, files)
    check(not os.path.exists(os.path.join(f.d.vm_dir("vm-ex1"), "handles.json")), "scratch left")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped" and "handles" not in vm, str(vm))
    s.proc.wait()


@with_fixture("kp")
def case_keep_then_teardown(f):
    s, tap, loops = f.vm_with_resources("vm-kp1", on_exit="keep")
    files = [f.image(f"vm-kp1-{i}.img") for i in range(2)]
    e = f.c.expect_error(IFACE + "Teardown", {"id": "vm-kp1"}, IFACE + "StillRunning")
    check(e["pid"] == s.pid, str(e))
    watcher = f.d.client().watch()
    s.kill()
    check(watcher.next_event()["kind"] == "exited", "exited")
    wait_until(lambda: f.c.call(IFACE + "List")["vms"][0]["state"] == "stopped", 5, "marked")
    check(link_exists(tap) and all(loops_on(x) for x in files), "keep keeps the resources")
    results = f.c.call(IFACE + "Teardown", {"id": "vm-kp1"})["results"]
    kinds = [(r["kind"], r["status"]) for r in results]
    check(kinds == [("loop", "removed"), ("loop", "removed"), ("tap", "removed")], str(results))
    f.nothing_left(tap, files)
    again = f.c.call(IFACE + "Teardown", {"id": "vm-kp1"})["results"]
    check(again == [], f"a second teardown has nothing left to name: {again}")
    check(f.d.read_until("vm=vm-kp1 op=teardown")
          and re.search(r" call=Teardown#\d+ vm=vm-kp1 op=teardown .*result=ok", f.d.log),
          f"no teardown audit line naming call= and vm=:\n{f.d.log}")


@with_fixture("st")
def case_starting_cleaned(f):
    """A manager crashed after creating a tap and a loop, before SetHandles."""
    tap = f.k.tap("st1")
    img = f.image("st1.img")
    f.c.call(IFACE + "Register", {"id": "vm-st1", "api_sock": f.sock("vm-st1"),
                                 "planned": {"tap": tap, "loop_files": [img]}})
    f.k.loop(img)
    f.restart(kill=True)
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped", str(vm))
    f.nothing_left(tap, [img])


@with_fixture("cr")
def case_corrupt_scratch_falls_back(f):
    s, tap, loops = f.vm_with_resources("vm-cr1")
    files = [f.image(f"vm-cr1-{i}.img") for i in range(2)]
    f.d.proc.kill()
    f.d.wait_exit()
    s.kill()
    with open(os.path.join(f.d.vm_dir("vm-cr1"), "handles.json"), "w") as fh:
        fh.write("garbage")
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    f.nothing_left(tap, files)  # the record's mirror knew what to tear down
    check("torn down" in f.d.log or "torn_down" in f.d.log, f.d.log)


@with_fixture("or")
def case_orphans_reported(f):
    orphan = f.stub("nobody-owns-me")
    report = f.c.call(IFACE + "Reconcile")
    check([o["pid"] for o in report["orphans"]] == [orphan.pid], str(report))
    check(orphan.proc.poll() is None, "an orphan is never killed")


@with_fixture("rs")
def case_restart_recovery(f):
    """200 VMs: 100 live (10 restarted on the same socket), 100 dead, 5 starting."""
    live, dead = {}, {}
    for i in range(100):
        vm_id = f"live{i:03d}"
        s = f.stub(vm_id)
        f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)})
        f.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid})
        live[vm_id] = s
    for i in range(100):
        vm_id = f"dead{i:03d}"
        tap = f.k.tap(f"d{i:03d}")
        loop = f.k.loop(f.image(f"{vm_id}.img"))
        s = f.stub(vm_id)
        f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)})
        f.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid, "tap": tap, "loops": [loop]})
        dead[vm_id] = (s, tap)
    starting = {}
    for i in range(5):
        vm_id = f"start{i}"
        tap = f.k.tap(f"s{i}")
        img = f.image(f"{vm_id}.img")
        f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id),
                                     "planned": {"tap": tap, "loop_files": [img]}})
        f.k.loop(img)
        starting[vm_id] = tap
    f.d.proc.kill()  # kill -9 bangerd (its helper follows)
    f.d.wait_exit()
    for s, _ in dead.values():
        s.kill()
    moved = {}
    for vm_id in list(live)[:10]:
        live[vm_id].kill()
        live[vm_id] = f.stub(vm_id)  # same api socket, new pid
        moved[vm_id] = live[vm_id].pid
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    vms = {v["id"]: v for v in f.c.call(IFACE + "List")["vms"]}
    check(len(vms) == 205, f"{len(vms)} records")
    for vm_id, s in live.items():
        v = vms[vm_id]
        check(v["state"] == "running" and v["handles"]["pid"] == s.pid,
              f"{vm_id}: {v.get('handles')} want pid {s.pid}")
        check(f.c.call(IFACE + "IsAlive", {"id": vm_id})["alive"] == "alive", vm_id)
    for vm_id, (s, tap) in dead.items():
        check(vms[vm_id]["state"] == "stopped" and "handles" not in vms[vm_id], vm_id)
        f.nothing_left(tap, [f.image(f"{vm_id}.img")])
    for vm_id, tap in starting.items():
        check(vms[vm_id]["state"] == "stopped", vm_id)
        f.nothing_left(tap, [f.image(f"{vm_id}.img")])
    for vm_id, pid in moved.items():
        with open(os.path.join(f.d.vm_dir(vm_id), "handles.json")) as fh:
            check(json.load(fh)["pid"] == pid, f"{vm_id}: scratch rewritten with the new pid")
    print("100 adopted (10 with new pids), 105 torn down, nothing leaked")


@with_fixture("hg")
def case_helper_gone_during_reconcile(f):
    """The helper dies while the startup SCAN is in flight: every VM is unknown, nothing is
    torn down, bangerd exits for a restart, and the next start finishes the job."""
    import select
    from bangertest import wait_pid_gone
    proxy = os.environ.get("BANGER_HELPER_PROXY", "")
    check(proxy and os.access(proxy, os.X_OK), "BANGER_HELPER_PROXY must name the proxy")
    vms = {}
    for i in range(3):
        vm_id = f"vm-hg{i}"
        s, tap, _ = f.vm_with_resources(vm_id)
        vms[vm_id] = (s, tap, [f.image(f"{vm_id}-{j}.img") for j in range(2)])
    f.d.proc.kill()  # kill -9 bangerd (its helper follows)
    f.d.wait_exit()
    for s, _, _ in vms.values():
        s.kill()  # all three are dead now, their resources still held

    def everything_still_there(when):
        for vm_id, (_, tap, files) in vms.items():
            check(link_exists(tap), f"{when}: tap {tap} of {vm_id} was torn down")
            for img in files:
                check(len(loops_on(img)) == 1, f"{when}: loop on {img}: {loops_on(img)}")
            check(os.path.exists(os.path.join(f.d.vm_dir(vm_id), "handles.json")),
                  f"{when}: handles.json of {vm_id} is gone")

    # Start bangerd through the proxy, which holds the first SCAN (type 5) and says so.
    fifo = os.path.join(f.d.dir, "proxy.fifo")
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists before the proxy writes
    os.environ.update(BANGER_PROXY_HOLD_TYPE="5", BANGER_PROXY_FIFO=fifo)
    try:
        f.d = Daemon(root=f.d.dir, extra=["--helper", proxy], wait_ready=False)
    finally:
        del os.environ["BANGER_PROXY_HOLD_TYPE"], os.environ["BANGER_PROXY_FIFO"]
    try:
        ready, _, _ = select.select([held], [], [], 10)
        check(ready, f"the proxy never held a SCAN within 10 s; log:\n{f.d.log}")
        check(os.read(held, 64) == b"held\n", "the proxy's announcement")
    finally:
        os.close(held)
    proxy_pid = f.d.helper_pid()
    with open(f"/proc/{proxy_pid}/task/{proxy_pid}/children") as fh:
        real = [int(p) for p in fh.read().split()]
    check(len(real) == 1, f"the proxy has children {real}, want the real helper alone")
    everything_still_there("with the SCAN in flight")

    os.kill(proxy_pid, signal.SIGKILL)  # the helper is gone at exactly this moment
    check(wait_pid_gone(real[0], 5), "the real helper outlived its proxy")
    rc = f.d.wait_exit(timeout=10)
    check(rc != 0, f"bangerd exited {rc} after losing its helper; log:\n{f.d.log}")
    check("banger-privhelper is gone" in f.d.log, f"no clear log line:\n{f.d.log}")
    check("ready:" not in f.d.log, f"bangerd became ready without a helper:\n{f.d.log}")
    for vm_id in vms:
        check(f"vm {vm_id} unknown" in f.d.log, f"{vm_id} not reported unknown:\n{f.d.log}")
    check("3 unknown" in f.d.log and "0 torn down" in f.d.log, f"reconcile summary:\n{f.d.log}")
    everything_still_there("after bangerd exited")
    print(f"SCAN held, proxy {proxy_pid} and helper {real[0]} killed: bangerd exited {rc}, "
          "nothing torn down")

    # The next start, with the real helper, finishes the job.
    f.d = Daemon(root=f.d.dir)
    f.d.own_dir = True  # the last daemon on this root removes it
    f.c = f.d.client()
    listed = {v["id"]: v for v in f.c.call(IFACE + "List")["vms"]}
    for vm_id, (_, tap, files) in vms.items():
        v = listed[vm_id]
        check(v["state"] == "stopped" and "handles" not in v, f"{vm_id}: {v}")
        f.nothing_left(tap, files)
        check(not os.path.exists(os.path.join(f.d.vm_dir(vm_id), "handles.json")),
              f"{vm_id}: scratch left")
    check("3 torn down" in f.d.log, f"second reconcile summary:\n{f.d.log}")


@with_fixture("ob")
def case_other_boot(f):
    """handles.json names a live process, but another boot's id (DESIGN section 3): that pid
    is of another boot, so the VM is dead without a probe or a scan. The process (a stub
    listening on the VM's api socket, which a scan would adopt) is never looked for and never
    touched: the scan reports it as an orphan. What the record names is torn down."""
    s, tap, _ = f.vm_with_resources("vm-ob1")
    files = [f.image(f"vm-ob1-{i}.img") for i in range(2)]
    path = os.path.join(f.d.vm_dir("vm-ob1"), "handles.json")
    with open("/proc/sys/kernel/random/boot_id") as fh:
        boot = fh.read().strip()
    with open(path) as fh:
        h = json.load(fh)
    check(h["boot_id"] == boot and h["pid"] == s.pid, f"handles.json as bangerd wrote it: {h}")
    other = "00000000-0000-4000-8000-000000000000"
    check(other != boot, "this boot's id is the planted one")
    owner = os.stat(path)
    check(f.d.stop() == 0, "clean stop")  # the VM runs on; its handles.json stays
    h["boot_id"] = other
    with open(path, "w") as fh:  # rewritten in place: still bangerd's file, mode 0600
        json.dump(h, fh)
    check((os.stat(path).st_uid, os.stat(path).st_mode) == (owner.st_uid, owner.st_mode),
          "the planted handles.json is bangerd's")
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    check(f.c.call(IFACE + "IsAlive", {"id": "vm-ob1"})["alive"] == "dead", "adopted")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped" and "handles" not in vm, f"not stopped: {vm}")
    check(f"reconcile: vm vm-ob1 torn_down: its pid {s.pid} is of another boot ({other}): "
          "dead without a probe" in f.d.log, f"no reconcile line saying why:\n{f.d.log}")
    f.nothing_left(tap, files)
    check(re.search(r" op=scan sockets=0 parts=1 matched=0 orphans=1 ", f.d.log),
          f"the scan looked for the VM's socket, or missed its process:\n{f.d.log}")
    check(" op=probe " not in f.d.log, f"a probe was sent:\n{f.d.log}")
    check(s.proc.poll() is None, "the live process of the planted pid was touched")
    print(f"pid {s.pid} of boot {other}: dead without a probe (scan asked for 0 sockets and "
          "reported the live process as an orphan), torn down, the process untouched")


@with_fixture("su")
def case_socket_gone_pid_lives(f):
    """A live VM's api socket file is unlinked while bangerd is down (the listener lives on,
    unreachable by path), so no scan can find the VM. DESIGN section 3: its saved pid is
    probed before it is called dead. The firecracker of that pid and start time still runs:
    unknown, nothing torn down. Once that process is gone too, the VM is dead and torn
    down."""
    s, tap, _ = f.vm_with_resources("vm-su1")
    files = [f.image(f"vm-su1-{i}.img") for i in range(2)]
    f.d.proc.kill()
    f.d.wait_exit()
    os.unlink(f.sock("vm-su1"))
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    check(f.c.call(IFACE + "IsAlive", {"id": "vm-su1"})["alive"] == "unknown",
          "a VM whose saved pid lives was judged alive or dead")
    why = (f"reconcile: vm vm-su1 unknown: its firecracker pid {s.pid} still runs, but its "
           "api socket shows no listener it holds")
    check(why in f.d.log, f"no reconcile line saying why:\n{f.d.log}")
    check(re.search(rf" op=probe pid={s.pid} pidfd=no start_time=[1-9][0-9]* .*"
                    r"result=not-running reason=no-listener", f.d.log),
          f"no audited probe of the saved pid:\n{f.d.log}")
    check(link_exists(tap) and all(loops_on(x) for x in files) and s.proc.poll() is None,
          "a VM whose firecracker runs lost its tap or loops, or its process")
    s.kill()
    report = f.c.call(IFACE + "Reconcile")["vms"]
    check([(v["id"], v["action"]) for v in report] == [("vm-su1", "torn_down")], str(report))
    f.nothing_left(tap, files)
    print(f"pid {s.pid} alive with its socket file gone: unknown, nothing torn down; once it "
          "exited: torn down")


@with_fixture("ur")
def case_unreadable_record(f):
    """vm.json cannot be read (not JSON, a wrong type, no permission): the record is still
    listed, with a problem that says why, and what its handles.json names is torn down. The
    file itself is never written over."""
    _, tap, _ = f.vm_with_resources("vm-ur1")
    files = [f.image(f"vm-ur1-{i}.img") for i in range(2)]
    for vm_id in ("vm-ur2", "vm-ur3"):
        f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)})
    f.d.proc.kill()  # kill -9 bangerd; then vm-ur1's firecracker dies too
    f.d.wait_exit()
    for s in f.stubs:
        s.kill()
    vm_json = {vm_id: os.path.join(f.d.vm_dir(vm_id), "vm.json")
               for vm_id in ("vm-ur1", "vm-ur2", "vm-ur3")}
    with open(vm_json["vm-ur1"], "w") as fh:  # rewritten in place: still bangerd's file
        fh.write('{"version": 1, "id": "vm-ur1", "state": "runn')
    with open(vm_json["vm-ur2"]) as fh:
        rec = json.load(fh)
    rec["state"] = 5
    with open(vm_json["vm-ur2"], "w") as fh:
        json.dump(rec, fh)
    os.chmod(vm_json["vm-ur3"], 0)  # bangerd's own file, which it may not read now
    before = {vm_id: open(path, "rb").read() for vm_id, path in vm_json.items()}
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    listed = {v["id"]: v for v in f.c.call(IFACE + "List")["vms"]}
    check(sorted(listed) == ["vm-ur1", "vm-ur2", "vm-ur3"], f"not all listed: {listed}")
    for vm_id, why in (("vm-ur1", "vm.json: not valid JSON"),
                       ("vm-ur2", 'vm.json: "state" is not a string'),
                       ("vm-ur3", "vm.json: Permission denied")):
        check(why in listed[vm_id].get("problem", ""), f"{vm_id} problem, want {why!r}: "
              f"{listed[vm_id]}")
    v = listed["vm-ur1"]
    check(v["state"] == "stopped" and "handles" not in v, f"vm-ur1 after reconcile: {v}")
    f.nothing_left(tap, files)
    check(re.search(r" vm=vm-ur1 op=teardown .*result=ok", f.d.log),
          f"no teardown audit line for vm-ur1:\n{f.d.log}")
    check("reconcile: vm vm-ur1 torn_down: its vm.json cannot be read: torn down from its "
          "handles.json" in f.d.log, f"no reconcile line saying why:\n{f.d.log}")
    check(not os.path.exists(os.path.join(f.d.vm_dir("vm-ur1"), "handles.json")),
          "handles.json left after the teardown")
    os.chmod(vm_json["vm-ur3"], 0o600)
    after = {vm_id: open(path, "rb").read() for vm_id, path in vm_json.items()}
    check(after == before, "an unreadable vm.json was written over")
    e = f.c.expect_error(IFACE + "Register", {"id": "vm-ur1", "api_sock": f.sock("vm-ur1")},
                         IFACE + "VMExists")
    check("vm.json cannot be read" in e["reason"], f"Register over it: {e}")
    print("3 unreadable records listed with their problems; vm-ur1's tap and loops torn down "
          "from its handles.json; every vm.json as it was")


@with_fixture("sl")
def case_stale_loop_spared(f):
    """A dead VM's record names /dev/loopN; the kernel gave that number to a live VM since."""
    img_a = f.image("sl-a.img")
    loop = Kernel("sl", high_loops=True).loop(img_a)  # a number no parallel test takes meanwhile
    f.k.files.append(img_a)  # the fixture's cleanup detaches what is left on its files
    f.c.call(IFACE + "Register", {"id": "vm-sla", "api_sock": f.sock("vm-sla"), "on_exit": "keep"})
    a = f.stub("vm-sla")
    f.c.call(IFACE + "SetHandles", {"id": "vm-sla", "pid": a.pid, "loops": [loop]})
    watcher = f.d.client().watch()
    a.kill()
    check(watcher.next_event()["kind"] == "exited", "A exited")
    sh("losetup", "-d", loop)  # the manager tidied up by hand...
    wait_until(lambda: loops_on(img_a) == [], 5, "the loop to detach")
    img_b = f.image("sl-b.img")
    with open(img_b, "wb") as fh:
        fh.truncate(1 << 20)
    f.k.files.append(img_b)
    sh("losetup", loop, img_b)  # ...and the same number now serves VM B
    f.c.call(IFACE + "Register", {"id": "vm-slb", "api_sock": f.sock("vm-slb")})
    b = f.stub("vm-slb")
    f.c.call(IFACE + "SetHandles", {"id": "vm-slb", "pid": b.pid, "loops": [loop]})
    results = f.c.call(IFACE + "Teardown", {"id": "vm-sla"})["results"]
    check(all(r["name"] != loop for r in results), f"A's teardown named B's loop: {results}")
    check(loops_on(img_b) == [loop], f"B's loop survived: {loops_on(img_b)}")


def loop_reattached_while_down(f, vm_id, elsewhere):
    """VM vm_id holds a real loop; bangerd stops and the VM dies; the loop is detached and
    its number attached again, to a file under the roots (another VM's, whose SetHandles is
    not durable yet: no record names it) or, with elsewhere, outside every root. The restart
    tears vm_id down: the new attach is not vm_id's, so it is absent and left alone, and the
    record finishes. Returns the loop."""
    k = Kernel(f.k.tag[:2], high_loops=True)  # a number no parallel test takes meanwhile
    img_a = f.image(f"{vm_id}-a.img")
    loop = k.loop(img_a)
    f.k.files.append(img_a)  # the fixture's cleanup detaches what is left on its files
    recorded = diskseq_of(loop)
    f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)})
    a = f.stub(vm_id)
    h = f.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": a.pid, "loops": [loop]})["vm"]
    check(h["handles"]["loop_diskseq"] == [recorded], f"recorded: {h}")
    check(f.d.stop() == 0, "clean stop")
    a.kill()
    sh("losetup", "-d", loop)
    wait_until(lambda: loops_on(img_a) == [], 5, "the loop to detach")
    img_b = os.path.join(f.d.dir, "elsewhere.img") if elsewhere else f.image(f"{vm_id}-b.img")
    with open(img_b, "wb") as fh:
        fh.truncate(1 << 20)
    f.k.files.append(img_b)
    sh("losetup", loop, img_b)
    now = diskseq_of(loop)
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    check(loops_on(img_b) == [loop], f"the new attach of {loop} was detached: {loops_on(img_b)}")
    check(diskseq_of(loop) == now, f"{loop} was re-attached by the restart")
    check(f"reconcile: vm {vm_id} torn_down" in f.d.log, f"{vm_id} not finished:\n{f.d.log}")
    audit = f"loops=\"{loop}:absent(diskseq {now} != recorded {recorded})\""
    check(audit in f.d.log, f"no audit line with {audit}:\n{f.d.log}")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped" and "handles" not in vm, f"{vm_id} finished: {vm}")
    check(not os.path.exists(os.path.join(f.d.vm_dir(vm_id), "handles.json")), "scratch left")
    print(f"{loop}: recorded diskseq {recorded}, re-attached as {now} "
          f"({'outside the roots' if elsewhere else 'under the roots'}): absent, kept; "
          f"{vm_id} stopped")
    return loop


@with_fixture("lr")
def case_loop_reused_while_down(f):
    """The reuse case: without the diskseq the restart detached a live VM's loop."""
    loop_reattached_while_down(f, "vm-lr1", elsewhere=False)


@with_fixture("lo")
def case_loop_reused_outside_roots(f):
    """A stale /dev/loopN that now backs a file outside the roots: once refused at every
    reconcile (the record never finished), now absent."""
    loop = loop_reattached_while_down(f, "vm-lo1", elsewhere=True)
    again = f.c.call(IFACE + "Reconcile")["vms"]
    check([(v["id"], v["action"]) for v in again] == [("vm-lo1", "clean")],
          f"a second reconcile still has work for vm-lo1: {again}")
    check(f"{loop}:refused" not in f.d.log, f"{loop} refused:\n{f.d.log}")


@with_fixture("ti")
def case_tap_reused_while_down(f):
    """The reuse case for taps: a VM's tap is deleted while bangerd is down and a link of the
    same name made again (another VM's tap: prefix and kind are right, its ifindex is new).
    The restart tears the dead VM down: the link is not its own, so it is absent and left
    alone, and the record finishes."""
    tap = f.k.tap("ifx")  # bgt<tag>ifx: this branch's name, no parallel test takes it
    recorded = ifindex_of(tap)
    f.c.call(IFACE + "Register", {"id": "vm-ti1", "api_sock": f.sock("vm-ti1")})
    a = f.stub("vm-ti1")
    h = f.c.call(IFACE + "SetHandles", {"id": "vm-ti1", "pid": a.pid, "tap": tap})["vm"]
    check(h["handles"]["tap_ifindex"] == recorded, f"recorded: {h}")
    check(f.d.stop() == 0, "clean stop")
    a.kill()
    sh("ip", "link", "del", tap)
    sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    now = ifindex_of(tap)
    check(now != recorded, f"{tap} made again with the same ifindex {now}")
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    check(link_exists(tap) and ifindex_of(tap) == now, f"the new link {tap} was touched")
    check("reconcile: vm vm-ti1 torn_down" in f.d.log, f"vm-ti1 not finished:\n{f.d.log}")
    audit = f"tap=\"{tap}:absent(ifindex {now} != recorded {recorded})\""
    check(audit in f.d.log, f"no audit line with {audit}:\n{f.d.log}")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped" and "handles" not in vm, f"vm-ti1 finished: {vm}")
    check(not os.path.exists(os.path.join(f.d.vm_dir("vm-ti1"), "handles.json")), "scratch left")
    print(f"{tap}: recorded ifindex {recorded}, made again as {now}: absent, kept; "
          "vm-ti1 stopped")


@with_fixture("od")
def case_old_records_without_diskseq(f):
    """handles.json and vm.json as a bangerd from before the diskseq and the ifindex wrote
    them: they load, a live VM is adopted with its loops and tap kept, and a dead one is torn
    down by today's backing-file, prefix and kind checks alone."""
    dead, dead_tap, dead_loops = f.vm_with_resources("vm-od1")
    live, live_tap, live_loops = f.vm_with_resources("vm-od2")
    check(f.d.stop() == 0, "clean stop")
    for vm_id in ("vm-od1", "vm-od2"):
        for name, strip in (("handles.json", lambda x: x), ("vm.json", lambda x: x["mirror"])):
            path = os.path.join(f.d.vm_dir(vm_id), name)
            with open(path) as fh:
                doc = json.load(fh)
            check("loop_diskseq" in strip(doc) and "tap_ifindex" in strip(doc),
                  f"{path}: {doc}")
            del strip(doc)["loop_diskseq"]
            del strip(doc)["tap_ifindex"]
            with open(path, "w") as fh:
                json.dump(doc, fh)
    dead.kill()
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    check("corrupt" not in f.d.log, f"an old file was taken for corrupt:\n{f.d.log}")
    h = f.c.call(IFACE + "GetHandles", {"id": "vm-od2"})["handles"]
    check(h["loops"] == live_loops and "loop_diskseq" not in h and "tap_ifindex" not in h
          and h["pid"] == live.pid, str(h))
    check(f.c.call(IFACE + "IsAlive", {"id": "vm-od2"})["alive"] == "alive", "vm-od2 adopted")
    check(all(loops_on(f.image(f"vm-od2-{i}.img")) for i in range(2)), "live loops kept")
    check(link_exists(live_tap), "live tap kept")
    check("reconcile: vm vm-od1 torn_down" in f.d.log, f"vm-od1 not torn down:\n{f.d.log}")
    f.nothing_left(dead_tap, [f.image(f"vm-od1-{i}.img") for i in range(2)])
    check(re.search(r"vm=vm-od1 op=teardown .*loops=\"[^\"]*:removed,[^\"]*:removed\" "
                    + f"tap=\"{dead_tap}:removed\"", f.d.log),
          f"no teardown by backing file, prefix and kind:\n{f.d.log}")


@with_fixture("ru")
def case_runs_under_one_id(f):
    """Three runs of one VM under one id (DESIGN section 2): Register re-arms a stopped record
    that holds nothing; VMExists names the state and what to call while it is starting,
    running, or stopped with leftovers."""
    vm_id = "vm-ru1"
    vm_json = os.path.join(f.d.vm_dir(vm_id), "vm.json")
    watcher = f.d.client().watch()

    def register(run, **extra):
        tap = f"bgt{f.k.tag}r{run}"[:15]
        files = [f.image(f"ru1-{run}-{i}.img") for i in range(2)]
        vm = f.c.call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id),
                                          "planned": {"tap": tap, "loop_files": files},
                                          **extra})["vm"]
        check(vm["state"] == "starting" and vm["planned"]["tap"] == tap and "handles" not in vm,
              f"run {run}: {vm}")
        with open(vm_json) as fh:
            rec = json.load(fh)
        check(rec["state"] == "starting" and rec["planned"]["tap"] == tap
              and rec["planned"]["loop_files"] == files,
              f"run {run}: the new plan is on disk before the reply: {rec}")
        return tap, files

    def refused(state, why):
        e = f.c.expect_error(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)},
                             IFACE + "VMExists")
        check(e["id"] == vm_id and e["state"] == state and why in e["reason"], str(e))

    def start(run, tap, files):
        f.k.tap(f"r{run}")
        loops = [f.k.loop(x) for x in files]
        s = f.stub(vm_id)
        f.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid, "tap": tap, "loops": loops})
        check(f.c.call(IFACE + "IsAlive", {"id": vm_id})["alive"] == "alive", f"run {run}")
        return s

    def next_event(kind):
        while True:
            ev = watcher.next_event()
            if ev.get("id") == vm_id and ev["kind"] == kind:
                return ev

    # Run 1: firecracker exits, bangerd tears it down (on_exit teardown), the record is free.
    tap, files = register(1)
    refused("starting", "SetHandles")
    s = start(1, tap, files)
    refused("running", "Teardown")
    s.kill()
    next_event("torn_down")
    f.nothing_left(tap, files)
    # Run 2, kept on exit: stopped with leftovers until Teardown.
    tap, files = register(2, on_exit="keep")
    s = start(2, tap, files)
    s.kill()
    next_event("exited")
    wait_until(lambda: f.c.call(IFACE + "List")["vms"][0]["state"] == "stopped", 5, "stopped")
    refused("stopped", "Teardown")
    check(link_exists(tap), "a refused Register touched nothing")
    f.c.call(IFACE + "Teardown", {"id": vm_id})
    f.nothing_left(tap, files)
    # Run 3 fails before SetHandles: ClearHandles leaves a plan whose resources may exist.
    tap, files = register(3)
    f.k.tap("r3")
    for x in files:
        f.k.loop(x)
    f.c.call(IFACE + "ClearHandles", {"id": vm_id})
    refused("stopped", "Teardown")
    results = f.c.call(IFACE + "Teardown", {"id": vm_id})["results"]
    check(("tap", tap, "removed") in [(r["kind"], r["name"], r["status"]) for r in results],
          f"the plan's tap was torn down: {results}")
    f.nothing_left(tap, files)
    # Free again: a fourth plan is taken, and survives a restart as that run's intent.
    tap, files = register(4)
    f.restart(kill=True)
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["id"] == vm_id and vm["state"] == "stopped", f"after the restart: {vm}")
    f.c.call(IFACE + "Unregister", {"id": vm_id})


CASES = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items())
         if name.startswith("case_")}

if __name__ == "__main__":
    run_cases(CASES)
