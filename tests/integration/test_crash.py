#!/usr/bin/env python3
"""bangerd killed at its named crash points, then restarted: does the restart repair
exactly what DESIGN §2-§3 promise?

Needs a build with -Dcrash_points=true (meson registers these cases only then).
BANGER_CRASH_AT=name[:N] makes that bangerd SIGKILL itself the Nth time it reaches the
named point (daemon/crashpoint.h): a real crash, nothing flushed, no atexit. Each case
drives the API (or kills a stub firecracker) up to one point with real taps, real loops
and a real stub firecracker, waits (bounded) for bangerd to die by SIGKILL, looks at the
disk the crash left, restarts bangerd on the same state dir without the crash point, and
checks the repair: handles known and the VM adopted when it lives, everything torn down
when it died, nothing leaked (the kernel's own view: /sys/class/net, losetup -j), every
file under the state dir parses. A crash point placed just before a cache change claims
that the disk already holds what the cache is about to; the cases after
set-after-handles-durable fail if the cache is updated before handles.json is written.
One case per meson test (argv[1]); every wait is for an event and bounded.
"""
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (IFACE, Daemon, Stub, Varlink, VarlinkError, check,  # noqa: E402
                        fail, require_root, run_cases, skip, wait_pid_gone)
from test_reconcile import Kernel, link_exists, loops_on  # noqa: E402

CRASH_ENV = "BANGER_CRASH_AT"
FAIL_ENV = "BANGER_FAIL_AT"
CRASH_TIMEOUT_S = 10


class Crash:
    """One state dir, the bangerds started on it in turn, and the kernel objects made."""

    def __init__(self, tag):
        require_root()
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun: cannot create tap devices here")
        self.k = Kernel(tag)
        self.stubs = []
        self.d = None
        self.c = None
        self.root = None
        self.loops = {}  # vm id -> the /dev/loopN names it held, and their files

    # --- bangerd ---------------------------------------------------------------------

    def start(self, crash_at=None, wait_ready=True, fail_at=None):
        """Start bangerd on this test's state dir (made by the first start), armed with
        BANGER_CRASH_AT=crash_at or BANGER_FAIL_AT=fail_at when given; it reads the
        variables once, at start."""
        armed = {CRASH_ENV: crash_at, FAIL_ENV: fail_at}
        os.environ.update({k: v for k, v in armed.items() if v})
        try:
            self.d = Daemon(root=self.root, wait_ready=wait_ready)
        finally:
            for k in armed:
                os.environ.pop(k, None)
        self.d.own_dir = False  # close() removes the dir, after the last bangerd
        self.root = self.d.dir
        self.helper = self.d.helper_pid() if wait_ready else None
        self.c = self.d.client() if wait_ready else None

    def crashed(self, point):
        """Wait (bounded) for the armed bangerd to die by SIGKILL at point."""
        rc = self.d.wait_exit(timeout=CRASH_TIMEOUT_S)
        check(rc == -signal.SIGKILL,
              f"bangerd exited {rc}, not by SIGKILL at {point}; log:\n{self.d.log}")
        check(f"crash point {point} reached" in self.d.log,
              f"bangerd died, but not at {point}; log:\n{self.d.log}")
        if self.helper:
            check(wait_pid_gone(self.helper, 5), "the helper outlived its bangerd")
        if self.c:
            self.c.close()
        self.c = None
        print(f"bangerd reached {point} and died by SIGKILL")

    def restart(self):
        """bangerd again on the same state dir, without any crash point."""
        self.start()
        print("restarted without the crash point: reconcile done, ready")

    def send(self, method, params):
        """A call whose reply the crash will swallow."""
        self.c.send(IFACE + method, params)

    # --- what a VM holds ------------------------------------------------------------

    def sock(self, vm_id):
        return os.path.join(self.d.api_root, vm_id, "api.sock")

    def image(self, name):
        return os.path.join(self.d.loop_root, name)

    def stub(self, vm_id):
        s = Stub(self.sock(vm_id))
        self.stubs.append(s)
        return s

    def resources(self, vm_id):
        """A real tap and two real loops on files under the loop root."""
        tap = self.k.tap(vm_id[-3:])
        files = [self.image(f"{vm_id}-{i}.img") for i in range(2)]
        loops = [self.k.loop(f) for f in files]
        return tap, loops, files

    def running_vm(self, vm_id, on_exit="teardown", armed_set=False):
        """Register, resources, stub, SetHandles. With armed_set the SetHandles is only
        sent: the armed point on its path swallows the reply."""
        tap, loops, files = self.resources(vm_id)
        self.loops[vm_id] = list(zip(loops, files))
        self.c.call(IFACE + "Register",
                    {"id": vm_id, "api_sock": self.sock(vm_id), "on_exit": on_exit})
        s = self.stub(vm_id)
        params = {"id": vm_id, "pid": s.pid, "tap": tap, "loops": loops}
        if armed_set:
            self.send("SetHandles", params)
        else:
            self.c.call(IFACE + "SetHandles", params)
        return s, tap, files

    # --- looking at the state dir ---------------------------------------------------

    def vm_dir(self, vm_id):
        return os.path.join(self.root, "state", "vms", vm_id)

    def on_disk(self, vm_id, name):
        """The parsed file, or None when it is not there."""
        path = os.path.join(self.vm_dir(vm_id), name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def all_files_parse(self):
        """Every file under vms/ is a vm.json or handles.json that parses, of our version,
        naming its own dir; no temp file or anything else is left. Returns the VM dirs."""
        vms = os.path.join(self.root, "state", "vms")
        dirs = sorted(os.listdir(vms))
        for vm_id in dirs:
            for name in sorted(os.listdir(os.path.join(vms, vm_id))):
                check(name in ("vm.json", "handles.json"), f"{vm_id}/{name} left on disk")
                try:
                    doc = self.on_disk(vm_id, name)
                except json.JSONDecodeError as e:
                    fail(f"{vm_id}/{name} does not parse: {e}")
                check(doc.get("version") == 1, f"{vm_id}/{name}: version {doc.get('version')}")
                if name == "vm.json":
                    check(doc["id"] == vm_id, f"{vm_id}/vm.json names {doc['id']}")
        print(f"every file under the state dir parses ({len(dirs)} VM dirs)")
        return dirs

    # --- what bangerd says ----------------------------------------------------------

    def listed(self, vm_id):
        vms = {v["id"]: v for v in self.c.call(IFACE + "List")["vms"]}
        return vms.get(vm_id)

    def alive(self, vm_id):
        return self.c.call(IFACE + "IsAlive", {"id": vm_id})["alive"]

    def handles(self, vm_id):
        try:
            return self.c.call(IFACE + "GetHandles", {"id": vm_id})["handles"]
        except VarlinkError as e:
            fail(f"{vm_id}: the restart does not know its handles: GetHandles gave {e}")

    def no_handles(self, vm_id):
        self.c.expect_error(IFACE + "GetHandles", {"id": vm_id}, IFACE + "NoHandles")

    # --- the kernel's view ----------------------------------------------------------

    def reused(self, vm_id):
        """Why a second teardown of vm_id may not find its loops absent: the kernel gave a
        freed /dev/loopN to another file meanwhile (another test, another program). With
        the diskseq recorded at SetHandles the helper finds that attach is not ours (absent);
        a loop recorded without one (by a plan's backing file) is judged by its file alone."""
        notes = []
        for dev, own in self.loops.get(vm_id, []):
            r = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", dev],
                               capture_output=True, text=True)
            back = r.stdout.strip()
            if r.returncode == 0 and back and back != own:
                notes.append(f"{dev} now backs {back}")
        if not notes:
            return ""
        return (" (the kernel reused its freed loop numbers meanwhile: " + "; ".join(notes) +
                ")")

    def nothing_left(self, tap, files):
        check(not link_exists(tap), f"tap {tap} leaked")
        for f in files:
            check(loops_on(f) == [], f"loop on {f} leaked: {loops_on(f)}")

    def all_there(self, tap, files):
        check(link_exists(tap), f"tap {tap} was torn down")
        for f in files:
            check(len(loops_on(f)) == 1, f"loop on {f}: {loops_on(f)}")

    def stopped_and_clean(self, vm_id, tap, files):
        """The dead VM's end state: stopped, no handles, no scratch, an empty mirror, nothing
        in the kernel."""
        v = self.listed(vm_id)
        check(v and v["state"] == "stopped" and "handles" not in v, f"{vm_id}: {v}")
        self.no_handles(vm_id)
        check(self.alive(vm_id) == "dead", f"{vm_id} not dead")
        check(self.on_disk(vm_id, "handles.json") is None, f"{vm_id}: handles.json left")
        rec = self.on_disk(vm_id, "vm.json")
        check(rec["state"] == "stopped", f"{vm_id}/vm.json: {rec}")
        check(rec["mirror"] == {"tap": "", "loops": [], "dm": []},
              f"{vm_id}/vm.json still mirrors resources: {rec['mirror']}")
        self.nothing_left(tap, files)
        print(f"{vm_id}: stopped, no handles, no handles.json, empty mirror; "
              f"tap {tap} and {len(files)} loops gone")

    def torn_down_at_restart(self, vm_id, statuses=None):
        """The restart's reconcile logged vm_id torn down; with statuses, every resource
        had one of them (absent, for a teardown already done once)."""
        check(f"reconcile: vm {vm_id} torn_down" in self.d.log,
              f"the restart did not tear {vm_id} down{self.reused(vm_id)}; log:\n{self.d.log}")
        if statuses:
            line = next((ln for ln in self.d.log.splitlines()
                         if f"event torn_down vm {vm_id}:" in ln), None)
            check(line, f"no torn_down event for {vm_id}; log:\n{self.d.log}")
            results = line.split(f"vm {vm_id}: ", 1)[1].split(", ")
            check(all(r.rsplit(": ", 1)[1] in statuses for r in results),
                  f"{vm_id}: {results}, want all {statuses}")
            print(f"restart tore {vm_id} down again: {', '.join(results)}")
        else:
            print(f"restart tore {vm_id} down")

    def close(self):
        for s in self.stubs:
            s.kill()
        if self.c:
            self.c.close()
        self.k.cleanup()  # before the files go: losetup -j finds loops by their backing file
        if self.d:
            self.d.finish()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def crash_case(tag):
    def wrap(fn):
        def run():
            t = Crash(tag)
            try:
                fn(t)
            finally:
                t.close()
        return run
    return wrap


# --- Register ------------------------------------------------------------------------

@crash_case("rg")
def case_register_after_record(t):
    """Intent first: the record is durable before Register returns, so a manager's plan
    survives a crash in Register and the restart tears down from it."""
    point = "register-after-record"
    t.start(point)
    tap = f"bgt{t.k.tag}rg1"[:15]
    img = t.image("vm-rg1.img")
    t.send("Register", {"id": "vm-rg1", "api_sock": t.sock("vm-rg1"),
                        "planned": {"tap": tap, "loop_files": [img]}})
    t.crashed(point)
    rec = t.on_disk("vm-rg1", "vm.json")
    check(rec and rec["state"] == "starting" and rec["planned"]["tap"] == tap,
          f"vm.json after the crash: {rec}")
    print("on disk: vm.json (starting, with the plan)")
    # The manager went on making what it planned; then it died too.
    t.k.tap("rg1")
    t.k.loop(img)
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-rg1")
    t.stopped_and_clean("vm-rg1", tap, [img])


# --- SetHandles ----------------------------------------------------------------------

@crash_case("sb")
def case_set_between_record_and_handles(t):
    """vm.json's mirror is durable, handles.json is not: the mirror alone lets the restart
    tear everything down once the VM is dead."""
    point = "set-between-record-and-handles"
    t.start(point)
    s, tap, files = t.running_vm("vm-sb1", armed_set=True)
    t.crashed(point)
    rec = t.on_disk("vm-sb1", "vm.json")
    check(rec["state"] == "running" and rec["mirror"]["tap"] == tap
          and len(rec["mirror"]["loops"]) == 2, f"vm.json after the crash: {rec}")
    check(t.on_disk("vm-sb1", "handles.json") is None, "handles.json written before the crash")
    print("on disk: vm.json (running, mirror: tap and 2 loops), no handles.json")
    s.kill()  # the VM died while bangerd was down
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-sb1")
    t.stopped_and_clean("vm-sb1", tap, files)


@crash_case("sh")
def case_set_cache_after_durable(t):
    """File first, cache second: while SetHandles' handles.json is not durable (the writer
    held between vm.json and handles.json), no client sees the new handles; once it is,
    the reply and every reader do."""
    point = "set-between-record-and-handles"
    fifo = os.path.join(tempfile.mkdtemp(prefix="banger-test-hold-"), "hold")
    os.mkfifo(fifo)
    os.chmod(os.path.dirname(fifo), 0o755)
    os.chmod(fifo, 0o666)  # bangerd opens it as the test user
    os.environ.update(BANGER_CRASH_HOLD=point, BANGER_CRASH_HOLD_FIFO=fifo)
    try:
        t.start()
    finally:
        for k in ("BANGER_CRASH_HOLD", "BANGER_CRASH_HOLD_FIFO"):
            os.environ.pop(k, None)
    try:
        s, tap, files = t.running_vm("vm-sh1", armed_set=True)
        check(t.d.read_until(f"crash point {point} reached: holding", 10),
              f"the writer never reached {point}; log:\n{t.d.log}")
        other = t.d.client()
        try:
            other.call(IFACE + "GetHandles", {"id": "vm-sh1"})
            fail("GetHandles answered handles that are not durable yet")
        except VarlinkError as e:
            check(e.error == IFACE + "NoHandles", f"GetHandles while held: {e.error}")
        alive = other.call(IFACE + "IsAlive", {"id": "vm-sh1"})
        check(alive.get("alive") != "alive", f"IsAlive while held: {alive}")
        print(f"while held: GetHandles NoHandles, IsAlive {alive.get('alive')}")
    finally:
        with open(fifo, "w") as f:  # release the writer
            f.write("x")
    reply = t.c.receive()
    check("error" not in reply, f"SetHandles after the release: {reply}")
    h = other.call(IFACE + "GetHandles", {"id": "vm-sh1"})
    check(h["handles"].get("tap") == tap, f"GetHandles after the release: {h}")
    check(t.on_disk("vm-sh1", "handles.json") is not None, "handles.json after the reply")
    other.close()
    shutil.rmtree(os.path.dirname(fifo), ignore_errors=True)
    s.kill()


@crash_case("sa")
def case_set_after_handles_durable_alive(t):
    """The crash comes when the cache is about to take the handles of the second VM
    (BANGER_CRASH_AT=...:2): handles.json must be durable by then. The restart knows the
    handles of both, adopts both live firecrackers and watches them."""
    point = "set-after-handles-durable"
    t.start(f"{point}:2")
    vms = {"vm-sa1": t.running_vm("vm-sa1")}
    vms["vm-sa2"] = t.running_vm("vm-sa2", armed_set=True)
    t.crashed(point)
    # What the crash left is checked after the restart: first what a lost handles.json
    # costs (the restart does not know the handles), then the file itself.
    left = {vm_id: t.on_disk(vm_id, "handles.json") for vm_id in vms}
    t.restart()
    t.all_files_parse()
    for vm_id, (s, tap, files) in vms.items():
        h = t.handles(vm_id)
        check(h["pid"] == s.pid and h["tap"] == tap, f"{vm_id}: GetHandles {h}, pid {s.pid}")
        check(t.alive(vm_id) == "alive", f"{vm_id} not alive after the restart")
        check(t.listed(vm_id)["state"] == "running", f"{vm_id} not running")
        t.all_there(tap, files)
        print(f"{vm_id}: GetHandles gives pid {s.pid}, alive, tap and loops kept")
        check(left[vm_id] and left[vm_id]["pid"] == s.pid,
              f"{vm_id}: handles.json after the crash: {left[vm_id]}")
    print("the crash had left handles.json of both VMs, with their pids")
    # Adopted means watched: the exit of each is seen and torn down at once.
    watcher = t.d.client().watch()
    for vm_id, (s, tap, files) in vms.items():
        s.kill()
        seen = [watcher.next_event() for _ in range(2)]
        check([(e["kind"], e["id"]) for e in seen] == [("exited", vm_id), ("torn_down", vm_id)],
              f"after killing {vm_id}: {seen}")
        t.stopped_and_clean(vm_id, tap, files)
    watcher.close()


@crash_case("sd")
def case_set_after_handles_durable_dead(t):
    """As above, but the VM dies while bangerd is down: the restart knows its handles
    from handles.json and tears everything down."""
    point = "set-after-handles-durable"
    t.start(point)
    s, tap, files = t.running_vm("vm-sd1", armed_set=True)
    t.crashed(point)
    left = t.on_disk("vm-sd1", "handles.json")  # checked last: first what its loss costs
    s.kill()
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-sd1")
    t.stopped_and_clean("vm-sd1", tap, files)
    check(left and left["pid"] == s.pid and left["tap"] == tap,
          f"handles.json after the crash: {left}")
    print(f"the crash had left handles.json (pid {s.pid}, tap {tap})")


# --- ClearHandles --------------------------------------------------------------------

def clear_case(t, point):
    """The manager's stop: ClearHandles while firecracker lives, then it kills firecracker
    (here: while bangerd is down). What the crash left must still lead to a teardown."""
    t.start(point)
    s, tap, files = t.running_vm("vm-cl1")
    t.send("ClearHandles", {"id": "vm-cl1"})
    t.crashed(point)
    return s, tap, files


@crash_case("cc")
def case_clear_after_cache_before_file(t):
    """The cache entry is gone, handles.json is not: the file is ahead of the cache (the
    recoverable direction), and the restart tears down from it."""
    point = "clear-after-cache-before-file"
    s, tap, files = clear_case(t, point)
    h = t.on_disk("vm-cl1", "handles.json")
    check(h and h["pid"] == s.pid, f"handles.json after the crash: {h}")
    check(t.on_disk("vm-cl1", "vm.json")["state"] == "running", "vm.json changed")
    print("on disk: handles.json still there, vm.json running")
    s.kill()
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-cl1")
    t.stopped_and_clean("vm-cl1", tap, files)


@crash_case("cf")
def case_clear_after_file_before_record(t):
    """handles.json is removed, vm.json still says running: its mirror is enough."""
    point = "clear-after-file-before-record"
    s, tap, files = clear_case(t, point)
    check(t.on_disk("vm-cl1", "handles.json") is None, "handles.json still there")
    rec = t.on_disk("vm-cl1", "vm.json")
    check(rec["state"] == "running" and rec["mirror"]["tap"] == tap, f"vm.json: {rec}")
    print("on disk: no handles.json, vm.json running with its mirror")
    s.kill()
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-cl1")
    t.stopped_and_clean("vm-cl1", tap, files)


# --- firecracker exits ---------------------------------------------------------------

@crash_case("ek")
def case_exit_keep_before_mark(t):
    """on_exit=keep: firecracker exited, bangerd died before marking the record. The
    restart must keep the resources (the manager decides), call the VM dead, and a later
    Teardown removes everything."""
    point = "exit-keep-before-mark"
    t.start(point)
    s, tap, files = t.running_vm("vm-ek1", on_exit="keep")
    s.kill()
    t.crashed(point)
    check(t.on_disk("vm-ek1", "handles.json") is not None, "handles.json gone")
    t.restart()
    t.all_files_parse()
    check("reconcile: vm vm-ek1 retained" in t.d.log, f"not retained; log:\n{t.d.log}")
    t.all_there(tap, files)
    check(t.alive("vm-ek1") == "dead", "vm-ek1 not dead")
    v = t.listed("vm-ek1")
    print(f"restart: retained (on_exit keep), dead, tap and loops kept; listed as "
          f"{v['state']}")
    results = t.c.call(IFACE + "Teardown", {"id": "vm-ek1"})["results"]
    check([r["status"] for r in results] == ["removed"] * 3, str(results))
    t.stopped_and_clean("vm-ek1", tap, files)


@crash_case("et")
def case_exit_before_teardown(t):
    """firecracker exited (on_exit=teardown), bangerd died before sending the teardown:
    the restart finds the VM dead and does it."""
    point = "exit-before-teardown"
    t.start(point)
    s, tap, files = t.running_vm("vm-et1")
    s.kill()
    t.crashed(point)
    t.all_there(tap, files)
    print("after the crash: tap and loops still there, handles.json too")
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-et1", {"removed"})
    t.stopped_and_clean("vm-et1", tap, files)


# --- teardown ------------------------------------------------------------------------

@crash_case("tr")
def case_teardown_after_result_before_record(t):
    """The exit teardown's result arrived (everything removed), bangerd died before the
    record said so: the restart tears down again, idempotently (absent counts as done),
    and marks the VM stopped."""
    point = "teardown-after-result-before-record"
    t.start(point)
    s, tap, files = t.running_vm("vm-tr1")
    s.kill()
    t.crashed(point)
    t.nothing_left(tap, files)
    check(t.on_disk("vm-tr1", "handles.json") is not None, "handles.json gone")
    check(t.on_disk("vm-tr1", "vm.json")["state"] == "running", "vm.json changed")
    print("after the crash: resources gone, handles.json and vm.json (running) still there")
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-tr1", {"absent"})
    t.stopped_and_clean("vm-tr1", tap, files)


@crash_case("ta")
def case_teardown_after_result_before_record_api(t):
    """The same point reached through the Teardown method (on_exit=keep). The restart
    retains a keep VM, as it must; the manager's repeated Teardown finds everything
    absent, counts that as done, and clears the VM."""
    point = "teardown-after-result-before-record"
    t.start(point)
    s, tap, files = t.running_vm("vm-ta1", on_exit="keep")
    watcher = t.d.client().watch()
    s.kill()
    check(watcher.next_event()["kind"] == "exited", "exited")
    watcher.close()
    t.send("Teardown", {"id": "vm-ta1"})
    t.crashed(point)
    t.nothing_left(tap, files)
    check(t.on_disk("vm-ta1", "handles.json") is not None, "handles.json gone")
    print("after the crash: resources gone, handles.json still there")
    t.restart()
    t.all_files_parse()
    check(t.alive("vm-ta1") == "dead", "vm-ta1 not dead")
    results = t.c.call(IFACE + "Teardown", {"id": "vm-ta1"})["results"]
    check(len(results) == 3 and all(r["status"] == "absent" for r in results),
          f"{results}{t.reused('vm-ta1')}")
    print(f"Teardown again after the restart: {[(r['kind'], r['status']) for r in results]}")
    t.stopped_and_clean("vm-ta1", tap, files)


@crash_case("th")
def case_teardown_after_handles_removed(t):
    """After the exit teardown: handles.json removed, vm.json not yet stopped. Its mirror
    makes the restart tear down again (all absent) and mark it stopped."""
    point = "teardown-after-handles-removed"
    t.start(point)
    s, tap, files = t.running_vm("vm-th1")
    s.kill()
    t.crashed(point)
    t.nothing_left(tap, files)
    check(t.on_disk("vm-th1", "handles.json") is None, "handles.json still there")
    rec = t.on_disk("vm-th1", "vm.json")
    check(rec["state"] == "running" and rec["mirror"]["tap"] == tap, f"vm.json: {rec}")
    print("after the crash: resources gone, no handles.json, vm.json running with its mirror")
    t.restart()
    t.all_files_parse()
    t.torn_down_at_restart("vm-th1", {"absent"})
    t.stopped_and_clean("vm-th1", tap, files)


# --- Unregister ----------------------------------------------------------------------

def unregister_case(t, point):
    """The whole life of a VM up to Unregister, which the crash interrupts."""
    t.start(point)
    s, tap, files = t.running_vm("vm-un1")
    watcher = t.d.client().watch()
    s.kill()
    seen = [watcher.next_event()["kind"] for _ in range(2)]
    check(seen == ["exited", "torn_down"], str(seen))
    watcher.close()
    t.send("Unregister", {"id": "vm-un1"})
    t.crashed(point)
    return tap, files


@crash_case("uh")
def case_unregister_after_handles_before_record(t):
    """Records go last: with handles.json gone and vm.json still there, the restart lists
    the VM, stopped, and a second Unregister finishes the job."""
    point = "unregister-after-handles-before-record"
    tap, files = unregister_case(t, point)
    check(t.on_disk("vm-un1", "vm.json") is not None, "vm.json removed before the crash")
    print("on disk: vm.json alone")
    t.restart()
    check(t.all_files_parse() == ["vm-un1"], "the VM's dir")
    v = t.listed("vm-un1")
    check(v and v["state"] == "stopped", f"vm-un1: {v}")
    t.c.call(IFACE + "Unregister", {"id": "vm-un1"})
    check(t.all_files_parse() == [], "the VM's dir is still there")
    check(t.listed("vm-un1") is None, "vm-un1 still listed")
    t.nothing_left(tap, files)
    print("restart: listed as stopped; Unregister again removed it; nothing leaked")


@crash_case("ud")
def case_unregister_after_record_before_dir(t):
    """vm.json is gone, its (empty) dir is not: the restart must not resurrect the VM, and
    nothing that parses as state is left."""
    point = "unregister-after-record-before-dir"
    tap, files = unregister_case(t, point)
    check(os.listdir(t.vm_dir("vm-un1")) == [], "files left in the VM's dir")
    print("on disk: the VM's dir, empty")
    t.restart()
    t.all_files_parse()
    check(t.listed("vm-un1") is None, "vm-un1 listed again")
    t.c.expect_error(IFACE + "GetHandles", {"id": "vm-un1"}, IFACE + "NoSuchVM")
    t.nothing_left(tap, files)
    left = os.path.isdir(t.vm_dir("vm-un1"))
    print(f"restart: vm-un1 not listed, nothing leaked; the empty dir "
          f"{'is still there' if left else 'is gone'}")
    t.c.call(IFACE + "Register", {"id": "vm-un1", "api_sock": t.sock("vm-un1")})
    check(t.all_files_parse() == ["vm-un1"], "the id's dir")
    print("the id is free again: Register vm-un1 succeeds")


@crash_case("uc")
def case_unregister_after_files_before_cache(t):
    """The files are all gone, only the cache still had the VM: the restart knows nothing
    of it, and nothing is left on disk or in the kernel."""
    point = "unregister-after-files-before-cache"
    tap, files = unregister_case(t, point)
    check(not os.path.exists(t.vm_dir("vm-un1")), "the VM's dir is still there")
    t.restart()
    check(t.all_files_parse() == [], "VM dirs left")
    check(t.listed("vm-un1") is None, "vm-un1 listed again")
    t.nothing_left(tap, files)
    print("restart: vm-un1 gone from disk and from bangerd, nothing leaked")


# --- reconcile -----------------------------------------------------------------------

@crash_case("ad")
def case_adopt_after_cache_before_scratch(t):
    """A restart finds the VM's firecracker under its api socket with a new pid, adopts it
    in the cache, and crashes before rewriting handles.json. The next restart still finds
    it (by socket), adopts it again and rewrites the scratch."""
    point = "adopt-after-cache-before-scratch"
    t.start()
    s, tap, files = t.running_vm("vm-ad1")
    t.d.proc.kill()  # kill -9 bangerd: the VM's firecracker is then replaced
    t.d.wait_exit()
    s.kill()
    s2 = t.stub("vm-ad1")
    t.c.close()
    t.c = None
    t.start(point, wait_ready=False)
    t.crashed(point)
    h = t.on_disk("vm-ad1", "handles.json")
    check(h and h["pid"] == s.pid, f"handles.json after the crash: {h}")
    print(f"on disk: handles.json with the old pid {s.pid}; the live one is {s2.pid}")
    t.restart()
    t.all_files_parse()
    check(t.handles("vm-ad1")["pid"] == s2.pid, "not adopted with the new pid")
    check(t.alive("vm-ad1") == "alive", "vm-ad1 not alive")
    check(t.on_disk("vm-ad1", "handles.json")["pid"] == s2.pid, "scratch not rewritten")
    t.all_there(tap, files)
    print(f"restart: adopted with pid {s2.pid}, handles.json rewritten, tap and loops kept")
    watcher = t.d.client().watch()
    s2.kill()
    seen = [watcher.next_event()["kind"] for _ in range(2)]
    check(seen == ["exited", "torn_down"], str(seen))
    watcher.close()
    t.stopped_and_clean("vm-ad1", tap, files)



# --- fault points: a failure no test could cause otherwise ----------------------------

@crash_case("hn")
def case_held_names_fail_closed(t):
    """The set of names live VMs hold cannot be built whole at the restart's reconcile (one
    of its allocations fails): no teardown is sent at all. The dead VM is reported failed
    with why, counted, and keeps everything; the next Reconcile, with the whole set, tears
    it down and spares the live VM."""
    point = "held-names-alloc"
    t.start()
    _, live_tap, live_files = t.running_vm("vm-hnl")
    dead, dead_tap, dead_files = t.running_vm("vm-hnd")
    t.d.proc.kill()  # kill -9 bangerd; then one VM dies while it is down
    t.d.wait_exit()
    dead.kill()
    t.c.close()
    t.start(fail_at=f"{point}:2")  # the first name's allocation, after the array's
    check(f"fault point {point} reached (hit 2)" in t.d.log,
          f"the fault point never fired; log:\n{t.d.log}")
    why = "not torn down: out of memory listing what live VMs hold"
    check(f"reconcile: vm vm-hnd failed: {why}" in t.d.log,
          f"the dead VM is not reported failed with why; log:\n{t.d.log}")
    check("event torn_down" not in t.d.log and " op=teardown " not in t.d.log,
          f"a teardown was sent without the whole set; log:\n{t.d.log}")
    t.all_there(dead_tap, dead_files)
    t.all_there(live_tap, live_files)
    check(t.alive("vm-hnd") == "dead" and t.alive("vm-hnl") == "alive", "liveness")
    check(t.handles("vm-hnd")["tap"] == dead_tap, "the dead VM keeps its handles for later")
    vms = t.c.call(IFACE + "GetStatus")["counters"]["reconciles"]["vms"]
    check(vms["failed"] == 1 and vms["torn_down"] == 0 and vms["kept"] == 1,
          f"reconcile counters: {vms}")
    print(f"held set failed at its second allocation: nothing torn down, vm-hnd failed "
          f"({why}), counters {vms}")
    report = {v["id"]: v for v in t.c.call(IFACE + "Reconcile")["vms"]}
    check(report["vm-hnd"]["action"] == "torn_down" and report["vm-hnl"]["action"] == "kept",
          f"the next Reconcile: {report}")
    t.stopped_and_clean("vm-hnd", dead_tap, dead_files)
    t.all_there(live_tap, live_files)
    check(t.alive("vm-hnl") == "alive", "the live VM survived")
    print("the next Reconcile, with the whole set, tore vm-hnd down and spared vm-hnl")


# --- kill -9 during a storm of batched writes (issue 14) --------------------------------
#
# Not a crash point: bangerd is SIGKILLed from outside at a random moment while client
# threads mutate as fast as they can, so the kill lands inside batches of the writer thread
# (temps written, some renamed, some not). Needs no -Dcrash_points build: it runs in the
# reconcile suite (gcc and ASan).

STORM_ROUNDS = 5
STORM_VM_WORKERS = 3     # whole VM lives: real tap, two real loops, a stub firecracker
STORM_CHURN_WORKERS = 5  # Register/Unregister of plain records, as fast as they go
STORM_KILL_AFTER_S = (0.3, 1.2)
STORM_JOIN_S = 30


class Gone(Exception):
    """bangerd died under the call."""


class StormVM:
    """One VM of the storm: the mutation last acknowledged, the one sent but not answered,
    and what it made in the kernel."""

    def __init__(self, vm_id):
        self.id = vm_id
        self.acked = ("absent", None)
        self.inflight = None
        self.tap = None
        self.files = []
        self.stub = None

    def op(self, c, state, method, params, pid=None):
        """One call; state (with pid) is what the disk must say once it is answered."""
        self.inflight = (state, pid)
        try:
            c.send(IFACE + method, params)
            reply = c.receive()
        except OSError:
            raise Gone()
        if reply is None:
            raise Gone()
        if "error" in reply:
            raise VarlinkError(reply["error"], reply.get("parameters", {}))
        self.acked, self.inflight = self.inflight, None
        return reply.get("parameters", {})


# What the disk may say while a mutation is half made: the record written, handles.json
# not (SetHandles), or handles.json removed, the record not yet (ClearHandles).
STORM_PARTIAL = {"running+handles": {("running", None)}, "stopped": {("running", None)}}


def storm_allowed(vm):
    allowed = {vm.acked}
    if vm.inflight:
        allowed.add(vm.inflight)
        allowed |= STORM_PARTIAL.get(vm.inflight[0], set())
    return allowed


class Storm:
    def __init__(self, t, rnd, rng, spawner):
        self.t = t
        # Stubs die with the thread that forked them (PR_SET_PDEATHSIG): one thread that
        # lives as long as the test starts them all, so a worker's end is not its VMs' end.
        self.spawner = spawner
        self.rnd = rnd
        self.rng = rng
        self.vms = []
        self.errors = []
        self.stop = threading.Event()
        self.names = itertools.count()

    def vm(self, prefix, w, n):
        vm = StormVM(f"{prefix}{self.rnd}w{w}n{n}")
        self.vms.append(vm)
        return vm

    def run(self, body, w):
        c = None
        try:
            c = Varlink(self.t.d.socket)
            for n in itertools.count():
                if self.stop.is_set():
                    break
                body(c, w, n)
        except Gone:
            pass
        except BaseException as e:  # fail() in a thread only ends the thread: report it
            self.errors.append(f"worker {w}: {e!r}")
        finally:
            if c:
                c.close()

    def life(self, c, w, n):
        """Register, make what it planned, SetHandles; then (mostly) stop it as a manager
        does: ClearHandles, kill firecracker, Teardown, Unregister. A third stay running."""
        t = self.t
        vm = self.vm("sv", w, n)
        suffix = format(next(self.names), "x") + str(self.rnd)
        tap = f"bgt{t.k.tag}{suffix}"[:15]
        files = [t.image(f"{vm.id}-{i}.img") for i in range(2)]
        vm.op(c, "starting", "Register", {"id": vm.id, "api_sock": t.sock(vm.id),
                                          "planned": {"tap": tap, "loop_files": files}})
        vm.tap = t.k.tap(suffix)
        check(vm.tap == tap, f"tap {vm.tap}, planned {tap}")
        vm.files = files
        loops = [t.k.loop(f) for f in files]
        t.loops[vm.id] = list(zip(loops, files))
        vm.stub = self.spawner.submit(t.stub, vm.id).result()
        vm.op(c, "running+handles", "SetHandles",
              {"id": vm.id, "pid": vm.stub.pid, "tap": tap, "loops": loops}, pid=vm.stub.pid)
        if self.rng.random() < 1 / 3:
            return
        vm.op(c, "stopped", "ClearHandles", {"id": vm.id})
        vm.stub.kill()
        vm.op(c, "stopped", "Teardown", {"id": vm.id})
        vm.op(c, "absent", "Unregister", {"id": vm.id})

    def churn(self, c, w, n):
        vm = self.vm("sc", w, n)
        vm.op(c, "starting", "Register", {"id": vm.id, "api_sock": self.t.sock(vm.id)})
        vm.op(c, "absent", "Unregister", {"id": vm.id})

    def go(self):
        """Run the workers, SIGKILL bangerd at a random moment, wait for every worker."""
        threads = [threading.Thread(target=self.run, args=(self.life, w))
                   for w in range(STORM_VM_WORKERS)]
        threads += [threading.Thread(target=self.run, args=(self.churn, w))
                    for w in range(STORM_VM_WORKERS, STORM_VM_WORKERS + STORM_CHURN_WORKERS)]
        for th in threads:
            th.start()
        time.sleep(self.rng.uniform(*STORM_KILL_AFTER_S))  # the moment of the kill, at random
        self.t.d.proc.kill()
        rc = self.t.d.wait_exit()
        check(rc == -signal.SIGKILL, f"bangerd exited {rc}, not by our SIGKILL")
        self.stop.set()
        for th in threads:
            th.join(STORM_JOIN_S)
            check(not th.is_alive(), f"a storm worker still runs {STORM_JOIN_S} s after the kill")
        check(not self.errors, "; ".join(self.errors))
        if self.t.helper:
            check(wait_pid_gone(self.t.helper, 5), "the helper outlived its bangerd")

    def disk_state(self, vm_id):
        t = self.t
        try:
            rec = t.on_disk(vm_id, "vm.json")
            h = t.on_disk(vm_id, "handles.json")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            fail(f"{vm_id}: a file does not parse after the kill: {e}")
        if rec is None:
            check(h is None, f"{vm_id}: handles.json without vm.json")
            return ("absent", None)
        check(rec["id"] == vm_id and rec["version"] == 1, f"{vm_id}/vm.json: {rec}")
        if h is None:
            return (rec["state"], None)
        check(h["version"] == 1, f"{vm_id}/handles.json: {h}")
        return (rec["state"] + "+handles", h["pid"])

    def check_disk(self):
        """Every acknowledged mutation is on disk, and nothing later than the one in flight."""
        answered = sum(vm.inflight is None for vm in self.vms)
        inflight = 0
        for vm in self.vms:
            state = self.disk_state(vm.id)
            check(state in storm_allowed(vm),
                  f"{vm.id}: on disk {state}; acknowledged {vm.acked}, in flight {vm.inflight}")
            inflight += vm.inflight is not None
        print(f"round {self.rnd}: {len(self.vms)} VMs, {answered} whose last call was answered, "
              f"on disk as answered, {inflight} calls in flight at the kill: each VM's files say what its "
              f"last answer said, or what the call in flight would have")


def case_kill9_storm():
    """SIGKILL bangerd at random moments of a storm of writes; after each: every file parses,
    every acknowledged mutation is on disk, the restart tears down exactly the dead VMs
    (nothing leaks) and keeps the live ones."""
    seed = int(os.environ.get("BANGER_STORM_SEED", time.time_ns() % 1000000))
    print(f"seed {seed} (BANGER_STORM_SEED reproduces the kill moments)")
    rng = random.Random(seed)
    t = Crash("ks")
    everything = []
    spawner = ThreadPoolExecutor(max_workers=1)
    try:
        t.start()
        for rnd in range(STORM_ROUNDS):
            storm = Storm(t, rnd, rng, spawner)
            storm.go()
            storm.check_disk()
            everything += storm.vms
            # Some VMs die while bangerd is down: the restart must tear those down.
            live = [vm for vm in everything if vm.stub and vm.stub.proc.poll() is None]
            for vm in live[1::2]:
                vm.stub.kill()
            t.c.close()
            t.c = None
            t.restart()
            t.all_files_parse()
            summary = next(ln for ln in t.d.log.splitlines() if "reconcile: " in ln
                           and " VMs: " in ln)
            check(" 0 failed, 0 unknown" in summary, f"restart: {summary}")
            kept = gone = 0
            for vm in everything:
                if not vm.tap:
                    continue
                if vm.stub and vm.stub.proc.poll() is None:
                    if vm.acked[0] == "running+handles":
                        t.all_there(vm.tap, vm.files)
                    elif vm.acked[0] == "starting":
                        # Its SetHandles was never answered: no record or held list names
                        # its /dev/loopN, and a dead VM's stale record may name the same
                        # numbers (the kernel reuses them at once). The diskseq recorded
                        # with each of those tells the helper they are not the same attach.
                        t.all_there(vm.tap, vm.files)
                    else:
                        # Stopped by its manager (ClearHandles) before the stub was killed:
                        # its plan may be torn down; only its tap, a name no other VM has,
                        # is bangerd's to keep for sure.
                        check(link_exists(vm.tap), f"{vm.id}: tap {vm.tap} was torn down")
                    kept += 1
                else:
                    check(not link_exists(vm.tap), f"{vm.id}: tap {vm.tap} leaked")
                    for f in vm.files:
                        check(loops_on(f) == [], f"{vm.id}: loop on {f} leaked{t.reused(vm.id)}")
                    gone += 1
            print(f"round {rnd}: restarted ({summary.split('reconcile: ', 1)[1]}); "
                  f"{kept} live VMs keep their tap and loops, {gone} dead ones hold nothing")
        check(kept > 0, "no VM lived through a restart: the storm tested no adoption")
    finally:
        t.close()
        spawner.shutdown()


CASES = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items())
         if name.startswith("case_")}

if __name__ == "__main__":
    run_cases(CASES)
