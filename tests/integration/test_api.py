#!/usr/bin/env python3
"""io.banger.Handles and the Varlink protocol rules, over a raw socket, against real bangerd.

Each case is one meson test (argv[1]). The daemon runs as root dropping to
the test user; stub firecrackers stand in for VMs. Bad-input cases check
afterwards that a second client is still served and that no state file
changed.
"""
import errno
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (IFACE, STUB_OTHER, Daemon, Kernel, Stub, Varlink,  # noqa: E402
                        VarlinkError, check, diskseq_of, fail, ifindex_of, require_root,
                        run_cases, sh, snapshot, wait_until)


class Fixture:
    def __init__(self, **kw):
        require_root()
        self.d = Daemon(**kw)
        self.c = self.d.client()
        self.stubs = []
        self.k = Kernel("api", high_loops=True)  # loops made only by the cases that need one

    def sock(self, vm_id):
        return os.path.join(self.d.api_root, vm_id, "api.sock")

    def register(self, vm_id, **params):
        return self.c.call(IFACE + "Register", {"id": vm_id, "api_sock": self.sock(vm_id), **params})

    def stub(self, vm_id, exe=None):
        s = Stub(self.sock(vm_id), exe=exe)
        self.stubs.append(s)
        return s

    def running_vm(self, vm_id, **handles):
        self.register(vm_id)
        s = self.stub(vm_id)
        reply = self.c.call(IFACE + "SetHandles", {"id": vm_id, "pid": s.pid, **handles})
        return s, reply

    def still_served(self):
        other = self.d.client()
        status = other.call(IFACE + "GetStatus")
        check("counts" in status, f"GetStatus from a second client: {status}")
        other.close()

    def close(self):
        for s in self.stubs:
            s.kill()
        self.c.close()
        self.k.cleanup()  # before the files go: losetup -j finds loops by their backing file
        self.d.finish()


def with_fixture(fn, **kw):
    f = Fixture(**kw)
    try:
        fn(f)
    finally:
        f.close()


# --- org.varlink.service and protocol rules -----------------------------------

def case_get_info(f):
    info = f.c.call("org.varlink.service.GetInfo")
    for key in ("vendor", "product", "version", "url", "interfaces"):
        check(key in info, f"GetInfo lacks {key}: {info}")
    check(set(info["interfaces"]) == {"org.varlink.service", "io.banger.Handles"}, str(info))
    desc = f.c.call("org.varlink.service.GetInterfaceDescription",
                    {"interface": "io.banger.Handles"})["description"]
    check(desc.startswith("# banger") and "interface io.banger.Handles" in desc
          and "method SetHandles(" in desc, "description of io.banger.Handles")
    desc = f.c.call("org.varlink.service.GetInterfaceDescription",
                    {"interface": "org.varlink.service"})["description"]
    check("interface org.varlink.service" in desc, "description of org.varlink.service")
    e = f.c.expect_error("org.varlink.service.GetInterfaceDescription", {"interface": "no.such"},
                         "org.varlink.service.InterfaceNotFound")
    check(e == {"interface": "no.such"}, str(e))


def case_reply_shape(f):
    """Replies carry only parameters, continues and error; parameters null is accepted."""
    f.c.send(IFACE + "GetStatus", None)
    f.c.send_raw(b'{"method":"io.banger.Handles.List","parameters":null}\0')
    f.c.send(IFACE + "Nope", {})
    for _ in range(3):
        reply = f.c.receive()
        check(set(reply) <= {"parameters", "continues", "error"}, f"reply keys {set(reply)}")
    e = f.c.expect_error(IFACE + "Nope", {}, "org.varlink.service.MethodNotFound")
    check(e == {"method": IFACE + "Nope"}, str(e))
    f.c.expect_error("no.such.Interface.Method", {}, "org.varlink.service.InterfaceNotFound")


def case_pipelined(f):
    """Several calls in one write are answered in order."""
    batch = b"".join(json.dumps({"method": IFACE + m, "parameters": p}).encode() + b"\0"
                     for m, p in [("Register", {"id": "p1", "api_sock": f.sock("p1")}),
                                  ("IsAlive", {"id": "p1"}),
                                  ("GetHandles", {"id": "p1"}),
                                  ("List", {})])
    f.c.send_raw(batch)
    r1, r2, r3, r4 = (f.c.receive() for _ in range(4))
    check(r1["parameters"]["vm"]["id"] == "p1", f"first reply {r1}")
    check(r2["parameters"]["alive"] == "dead", f"second reply {r2}")
    check(r3["error"] == IFACE + "NoHandles", f"third reply {r3}")
    check([v["id"] for v in r4["parameters"]["vms"]] == ["p1"], f"fourth reply {r4}")


def case_oneway(f):
    f.c.send(IFACE + "Register", {"id": "ow", "api_sock": f.sock("ow")}, oneway=True)
    f.c.send(IFACE + "IsAlive", {"id": "ow"})
    reply = f.c.receive()
    check(reply == {"parameters": {"alive": "dead"}}, f"the oneway call got a reply: {reply}")


def case_more(f):
    watcher = f.d.client().watch()
    f.register("m1")
    event = watcher.next_event()
    check(event["kind"] == "registered" and event["id"] == "m1", str(event))
    f.c.expect_error(IFACE + "Watch", {}, "org.varlink.service.ExpectedMore")
    watcher.close()


def case_unknown_parameter(f):
    e = f.c.expect_error(IFACE + "IsAlive", {"id": "x", "extra": 1},
                         "org.varlink.service.InvalidParameter")
    check(e == {"parameter": "extra"}, str(e))
    for params, name in [({"id": 5}, "id"), ({}, "id"), ({"id": ["a"]}, "id")]:
        e = f.c.expect_error(IFACE + "IsAlive", params, "org.varlink.service.InvalidParameter")
        check(e["parameter"] == name, str(e))
    f.c.expect_error(IFACE + "Register", {"id": "x", "api_sock": 7}, IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "Register", {"id": "x", "api_sock": "relative"},
                     IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "Register", {"id": "x", "api_sock": "/elsewhere/a.sock"},
                     IFACE + "PolicyRefused")
    f.c.expect_error(IFACE + "SetHandles", {"id": "x", "pid": "12"}, IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "SetHandles", {"id": "x", "pid": 1.5}, IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "SetHandles", {"id": "x", "pid": -3}, IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "GetHandles", {"id": "x"}, IFACE + "NoSuchVM")


def case_watcher_leaves(f):
    """A Watch client that goes away, before and during events, costs the daemon nothing."""
    gone = f.d.client().watch()
    gone.close()
    f.register("w1")
    busy = f.d.client().watch()
    busy.sock.shutdown(socket.SHUT_RDWR)
    busy.close()
    for i in range(20):
        f.register(f"w{i + 2}")
    check(f.d.proc.poll() is None, f"bangerd died:\n{f.d.log}")
    status = f.c.call(IFACE + "GetStatus")
    check(status["counts"]["vms"] == 21, str(status))
    check(f.c.call(IFACE + "List")["vms"][0]["id"] == "w1", "still serving")


# --- bad input: each leaves the daemon serving and the state untouched --------

def bad_input(action):
    def run(f):
        f.running_vm("keep")
        before = snapshot(f.d.state)
        action(f)
        f.still_served()
        check(snapshot(f.d.state) == before, "a state file changed")
        vms = f.c.call(IFACE + "List")["vms"]
        check([v["id"] for v in vms] == ["keep"], f"VMs after bad input: {vms}")
    return run


def bad_ids(f):
    for bad in ["..", ".", "a/b", "", "x" * 65, "a\nb", "a\x01b", "-lead", "a b", "é"]:
        for method in ("Register", "IsAlive", "Unregister"):
            params = {"id": bad, "api_sock": f.sock("ok")} if method == "Register" else {"id": bad}
            f.c.expect_error(IFACE + method, params, IFACE + "InvalidID")
    # The id is echoed in printable ASCII and cut to 79 bytes: never a control byte or half
    # a UTF-8 character in the reply or the log.
    shown = {"a\nb": "a?b", "a\x01b\x7f": "a?b?", "é": "??", "x" * 200: "x" * 79}
    for bad, want in shown.items():
        e = f.c.expect_error(IFACE + "IsAlive", {"id": bad}, IFACE + "InvalidID")
        check(e["id"] == want, f"InvalidID echoes {e['id']!r} for {bad!r}, want {want!r}")


def bad_methods_and_types(f):
    f.c.expect_error(IFACE + "Frobnicate", {}, "org.varlink.service.MethodNotFound")
    f.c.expect_error(IFACE + "Register", {"id": "n", "api_sock": f.sock("n"), "color": "red"},
                     "org.varlink.service.InvalidParameter")
    f.c.expect_error(IFACE + "Register", {"id": "n", "api_sock": f.sock("n"), "planned": []},
                     "org.varlink.service.InvalidParameter")
    f.c.expect_error(IFACE + "Register",
                     {"id": "n", "api_sock": f.sock("n"), "planned": {"dm": ["a/b"]}},
                     IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "Register",
                     {"id": "n", "api_sock": f.sock("n"), "on_exit": "explode"},
                     IFACE + "InvalidParameter")
    f.c.expect_error(IFACE + "SetHandles", {"id": "keep", "pid": 1, "loops": "x"},
                     IFACE + "InvalidParameter")


def bad_not_object(f):
    """A message that is not a call gets InvalidParameter naming what is wrong with it, and
    the connection stays: all of these go one after another over one connection."""
    not_object = "message: not a JSON object"
    for raw, parameter in [
            (b"[1,2]\0", not_object),
            (b"42\0", not_object),
            (b"\"str\"\0", not_object),
            (b"{nope\0", None),  # the parser's own words after "message: "
            (b"{\"method\": 5}\0", "method"),
            (b"{\"method\":\"io.banger.Handles.List\",\"parameters\":[]}\0", "parameters"),
            (b"{\"method\":\"io.banger.Handles.List\",\"more\":\"yes\"}\0",
             "more/oneway/upgrade must be booleans")]:
        f.c.send_raw(raw)
        reply = f.c.receive()
        check(reply is not None, f"{raw!r}: the connection was closed without an error reply")
        got = reply.get("parameters", {}).get("parameter", "")
        if parameter is None:
            named = got.startswith("message: ") and got != not_object and len(got) > 9
        else:
            named = got == parameter
        check(reply.get("error") == "org.varlink.service.InvalidParameter" and named,
              f"{raw!r}: {reply}, want InvalidParameter {parameter or 'message: (parse error)'}")
    check(f.c.call(IFACE + "List")["vms"][0]["id"] == "keep", "the same connection still serves")


def bad_deep_nesting(f):
    f.c.send_raw(b'{"method":"io.banger.Handles.List","parameters":{"a":' + b"[" * 10000
                 + b"]" * 10000 + b"}}\0")
    reply = f.c.receive()
    check(reply and reply["error"] == "org.varlink.service.InvalidParameter"
          and "nesting" in reply["parameters"]["parameter"], f"deep nesting: {reply}")


def bad_huge_message(f):
    chunk = b"x" * (1 << 20)
    f.c.send_raw(b'{"method":"io.banger.Handles.List","parameters":{"pad":"')
    sent = 0
    try:
        while sent < 100 * (1 << 20):
            f.c.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    check(sent < 100 * (1 << 20), "the daemon read 100 MB of one message")
    check(f.c.receive() is None, "the oversized connection was not closed")
    f.c = f.d.client()


def bad_nul_in_string(f):
    f.c.send_raw(b'{"method":"io.banger.Handles.IsAlive","parameters":{"id":"ke\\u0000ep"}}\0')
    reply = f.c.receive()
    check(reply["error"] == "org.varlink.service.InvalidParameter"
          and "NUL" in reply["parameters"]["parameter"], f"NUL in a string: {reply}")


def bad_many_connections(f):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    conns = [f.d.client() for _ in range(1000)]
    for c in conns:
        c.send(IFACE + "GetStatus")
    for c in conns:
        reply = c.receive()
        check(reply and "counts" in reply["parameters"], f"one of 1,000 clients: {reply}")
    status = f.c.call(IFACE + "GetStatus")
    check(status["counters"]["connections"] >= 1001, str(status["counters"]))
    for c in conns:
        c.close()


def bad_half_message(f):
    f.c.send_raw(b'{"method":"io.banger.Handles.GetSta')
    f.still_served()  # others are served while this one dangles
    f.c.sock.settimeout(15)
    start = time.monotonic()
    check(f.c.receive() is None, "a half message got a reply")
    took = time.monotonic() - start
    check(took < 15, f"the half message was held {took:.1f} s")
    f.c = f.d.client()


# --- the handle rules of DESIGN section 2 ------------------------------------

def case_intent_first(f):
    vm = f.register("i1", planned={"tap": "bgt-i1", "loop_files": [f.d.loop_root + "/i1.img"],
                                   "dm": ["bangertest-i1"]})["vm"]
    check(vm["state"] == "starting", str(vm))
    with open(os.path.join(f.d.vm_dir("i1"), "vm.json")) as fh:
        rec = json.load(fh)
    check(rec["version"] == 1 and rec["state"] == "starting"
          and rec["planned"]["tap"] == "bgt-i1", f"vm.json written before the reply: {rec}")
    check(not os.path.exists(os.path.join(f.d.vm_dir("i1"), "handles.json")), "no scratch yet")
    f.c.expect_error(IFACE + "Register", {"id": "i1", "api_sock": f.sock("i1")}, IFACE + "VMExists")
    f.c.expect_error(IFACE + "Register",
                     {"id": "i2", "api_sock": f.sock("i2"), "planned": {"tap": "eth0"}},
                     IFACE + "PolicyRefused")


def case_set_order(f):
    loop = f.k.loop(os.path.join(f.d.loop_root, "s1.img"))
    seq = diskseq_of(loop)
    tap = f.k.tap("s1")
    ifindex = ifindex_of(tap)
    s, reply = f.running_vm("s1", tap=tap, loops=[loop], dm=["bangertest-s1"])
    check(reply["persisted"] is True and reply["vm"]["handles"]["pid"] == s.pid, str(reply))
    check(reply["vm"]["handles"]["loop_diskseq"] == [seq], f"the attach's diskseq: {reply}")
    check(reply["vm"]["handles"]["tap_ifindex"] == ifindex, f"the link's ifindex: {reply}")
    with open(os.path.join(f.d.vm_dir("s1"), "handles.json")) as fh:
        h = json.load(fh)
    check(h["pid"] == s.pid and h["tap"] == tap and h["tap_ifindex"] == ifindex
          and h["loops"] == [loop] and h["loop_diskseq"] == [seq], str(h))
    with open(os.path.join(f.d.vm_dir("s1"), "vm.json")) as fh:
        rec = json.load(fh)
    check(rec["state"] == "running" and rec["mirror"]["tap"] == tap
          and rec["mirror"]["tap_ifindex"] == ifindex
          and rec["mirror"]["loops"] == [loop] and rec["mirror"]["loop_diskseq"] == [seq]
          and rec["mirror"]["dm"] == ["bangertest-s1"], f"teardown fields mirrored: {rec}")
    handles = f.c.call(IFACE + "GetHandles", {"id": "s1"})["handles"]
    check(handles["pid"] == s.pid and handles["start_time"] > 0 and handles["boot_id"], str(handles))
    check(f.c.call(IFACE + "IsAlive", {"id": "s1"})["alive"] == "alive", "alive")
    # The helper's audit line names bangerd's call and the VM, each a field of its own.
    audit = re.compile(r"audit req=\d+ caller_uid=\d+ caller_gid=\d+ caller_pid=\d+ "
                       r"call=SetHandles#\d+ vm=s1 op=probe ")
    check(f.d.read_until("op=probe") and audit.search(f.d.log),
          f"no probe audit line naming call= and vm=:\n{f.d.log}")


def case_set_loop_not_attached(f):
    """A VM cannot be using a loop that has no backing file, or a path that is no loop device:
    SetHandles refuses both, naming the loop, and records nothing."""
    f.register("sn")
    s = f.stub("sn")
    gone = f.k.loop(os.path.join(f.d.loop_root, "sn.img"))  # a high number no other test takes
    sh("losetup", "-d", gone)
    wait_until(lambda: not os.path.exists(f"/sys/block/{os.path.basename(gone)}/loop"), 5,
               "the loop to detach")
    before = snapshot(f.d.state)
    for loops, says in [([gone], f"{gone} is not attached to a backing file"),
                        (["/dev/loop1048575"], "/dev/loop1048575 is not attached"),
                        (["/dev/loop07"], "/dev/loop07 is not a loop device"),
                        ([os.path.join(f.d.loop_root, "sn.img")], "is not a loop device")]:
        e = f.c.expect_error(IFACE + "SetHandles", {"id": "sn", "pid": s.pid, "loops": loops},
                             IFACE + "InvalidParameter")
        check(e["parameter"] == "loops" and says in e["reason"], f"{loops}: {e}")
    check(snapshot(f.d.state) == before, "a refused SetHandles changed a state file")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "starting" and "handles" not in vm, str(vm))


def case_set_tap_missing(f):
    """A VM cannot be using a tap no interface is named: SetHandles refuses it, naming the tap,
    and records nothing (as a loop that is not attached)."""
    f.register("tm")
    s = f.stub("tm")
    gone = f.k.tap("tm")
    sh("ip", "link", "del", gone)
    wait_until(lambda: not os.path.exists(f"/sys/class/net/{gone}"), 5, "the tap to go")
    before = snapshot(f.d.state)
    e = f.c.expect_error(IFACE + "SetHandles", {"id": "tm", "pid": s.pid, "tap": gone},
                         IFACE + "InvalidParameter")
    check(e["parameter"] == "tap" and f"no network interface is named {gone}" in e["reason"],
          str(e))
    check(snapshot(f.d.state) == before, "a refused SetHandles changed a state file")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "starting" and "handles" not in vm, str(vm))


def case_not_firecracker(f):
    f.register("nf")
    impostor = Stub(f.sock("nf"), exe=STUB_OTHER)
    f.stubs.append(impostor)
    e = f.c.expect_error(IFACE + "SetHandles", {"id": "nf", "pid": impostor.pid},
                         IFACE + "NotFirecracker")
    check(e["reason"] == "not-firecracker", str(e))
    other = f.stub("elsewhere")  # a real stub, but serving another socket
    e = f.c.expect_error(IFACE + "SetHandles", {"id": "nf", "pid": other.pid},
                         IFACE + "NotFirecracker")
    check(e["reason"] == "no-listener", str(e))
    check(not os.path.exists(os.path.join(f.d.vm_dir("nf"), "handles.json")), "nothing written")


def case_set_no_switch(f):
    """A second process that holds the VM's listener (passed to it) never replaces the live,
    watched firecracker through SetHandles; a process that listens late is waited for."""
    f.register("ns")
    rendezvous = os.path.join(f.d.dir, "rendezvous.sock")
    holder = Stub(f.sock("ns"), extra=["--recv-listener", rendezvous])
    f.stubs.append(holder)
    real = Stub(f.sock("ns"), extra=["--send-listener", rendezvous])  # ready once handed over
    f.stubs.append(real)
    f.c.call(IFACE + "SetHandles", {"id": "ns", "pid": real.pid})
    e = f.c.expect_error(IFACE + "SetHandles", {"id": "ns", "pid": holder.pid},
                         IFACE + "StillRunning")
    check(e["pid"] == real.pid, f"StillRunning names the watched pid {real.pid}: {e}")
    handles = f.c.call(IFACE + "GetHandles", {"id": "ns"})["handles"]
    check(handles["pid"] == real.pid, f"still the real pid: {handles}")
    check(f.c.call(IFACE + "IsAlive", {"id": "ns"})["alive"] == "alive", "alive")


def case_set_waits_for_listener(f):
    """firecracker binds its api socket just after it starts: SetHandles waits for that, up
    to api_sock_wait_ms (here 1000 ms), and no longer."""
    f.register("late")
    late = Stub(f.sock("late"), extra=["--listen-after-ms", "300"], wait=False)
    f.stubs.append(late)
    reply = f.c.call(IFACE + "SetHandles", {"id": "late", "pid": late.pid})
    check(reply["vm"]["handles"]["pid"] == late.pid, f"waited for the listener: {reply}")
    late.wait_ready()
    f.register("never")
    never = Stub(f.sock("never"), extra=["--listen-after-ms", "60000"], wait=False)
    f.stubs.append(never)
    started = time.monotonic()
    e = f.c.expect_error(IFACE + "SetHandles", {"id": "never", "pid": never.pid},
                         IFACE + "NotFirecracker")
    waited = time.monotonic() - started
    check(e["reason"] == "no-listener", str(e))
    check(0.9 <= waited < 3.0, f"gave up after {waited:.2f} s, want about 1 s")
    print(f"set-waits-for-listener: listening after 300 ms: adopted; never: gave up after "
          f"{waited * 1000:.0f} ms (api_sock_wait_ms 1000)")


def case_pidfd_forwarded(f):
    f.register("pf")
    s = f.stub("pf")
    pidfd = os.pidfd_open(s.pid)
    f.c.send(IFACE + "SetHandles", {"id": "pf", "pid": 1}, fds=[pidfd])
    os.close(pidfd)
    reply = f.c.receive()
    check("error" not in reply and reply["parameters"]["vm"]["handles"]["pid"] == s.pid,
          f"the pidfd, not the pid, named the process: {reply}")


def case_persist_retry(f):
    watcher = f.d.client().watch()
    f.register("pr")
    check(watcher.next_event()["kind"] == "registered", "registered event")
    vm_dir = f.d.vm_dir("pr")
    os.chmod(vm_dir, 0o500)  # the daemon runs unprivileged: it cannot write here now
    try:
        s = f.stub("pr")
        reply = f.c.call(IFACE + "SetHandles", {"id": "pr", "pid": s.pid, "tap": f.k.tap("pr")})
        check(reply["persisted"] is False, f"persisted with an unwritable dir: {reply}")
        check(not os.path.exists(os.path.join(vm_dir, "handles.json")), "no file yet")
        check(f.c.call(IFACE + "GetHandles", {"id": "pr"})["handles"]["pid"] == s.pid,
              "the cache serves the handles")
        kinds = []
        while "handles_set" not in kinds:
            kinds.append(watcher.next_event()["kind"])
        check("persist_failed" in kinds, f"events {kinds}")
    finally:
        os.chmod(vm_dir, 0o700)
    while True:
        event = watcher.next_event()
        if event["kind"] == "persist_recovered":
            break
    with open(os.path.join(vm_dir, "handles.json")) as fh:
        check(json.load(fh)["pid"] == s.pid, "handles.json written once the dir was writable")
    check(f.c.call(IFACE + "List")["vms"][0]["persisted"] is True, "persisted in List")
    watcher.close()


def case_clear(f):
    f.running_vm("c1")
    f.c.call(IFACE + "ClearHandles", {"id": "c1"})
    check(not os.path.exists(os.path.join(f.d.vm_dir("c1"), "handles.json")), "scratch removed")
    f.c.expect_error(IFACE + "GetHandles", {"id": "c1"}, IFACE + "NoHandles")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(vm["state"] == "stopped" and "handles" not in vm, str(vm))


def case_missing_scratch(f):
    """A missing handles.json after a restart is a stopped VM, not an error."""
    f.running_vm("ms")
    f.c.call(IFACE + "ClearHandles", {"id": "ms"})
    check(f.d.stop() == 0, "clean stop")
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    f.c.expect_error(IFACE + "GetHandles", {"id": "ms"}, IFACE + "NoHandles")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check("problem" not in vm and vm["state"] == "stopped", str(vm))
    # Loaded like any record, and nothing about it worth a warning.
    lines = f.d.log.splitlines()
    check("<6>bangerd: loaded 1 VM records" in lines, f"no load line for the one record:\n{f.d.log}")
    complaints = [line for line in lines if re.match(r"<[0-4]>", line) or "vm ms" in line]
    check(not complaints, f"a missing handles.json is logged as a problem: {complaints}")


def case_corrupt_scratch(f):
    tap = f.k.tap("cs")
    s, _ = f.running_vm("cs", tap=tap)
    check(f.d.stop() == 0, "clean stop")
    path = os.path.join(f.d.vm_dir("cs"), "handles.json")
    with open(path, "w") as fh:
        fh.write('{"version": 1, "pid": "not a number"')
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    e = f.c.expect_error(IFACE + "GetHandles", {"id": "cs"}, IFACE + "CorruptState")
    check(e["file"] == path and e["kept_as"].startswith(path + ".corrupt-"), str(e))
    check(not os.path.exists(path), "the corrupt file is moved aside")
    with open(e["kept_as"]) as fh:
        check(fh.read() == '{"version": 1, "pid": "not a number"', "kept as it was")
    check(path in f.d.log, "the log names the file")
    vm = f.c.call(IFACE + "List")["vms"][0]
    check(path in vm["problem"], f"List shows the problem: {vm}")
    # The record's mirror still knows what to tear down.
    with open(os.path.join(f.d.vm_dir("cs"), "vm.json")) as fh:
        check(json.load(fh)["mirror"]["tap"] == tap, "mirror kept")


def case_unregister(f):
    s, _ = f.running_vm("u1")
    e = f.c.expect_error(IFACE + "Unregister", {"id": "u1"}, IFACE + "StillRunning")
    check(e["pid"] == s.pid, str(e))
    watcher = f.d.client().watch()
    s.kill()
    event = watcher.next_event()
    check(event["kind"] == "exited" and event["pid"] == s.pid, str(event))
    check(f.c.call(IFACE + "IsAlive", {"id": "u1"})["alive"] == "dead", "dead after exit")
    f.c.call(IFACE + "Unregister", {"id": "u1"})
    check(not os.path.exists(f.d.vm_dir("u1")), "vm dir removed")
    f.c.expect_error(IFACE + "IsAlive", {"id": "u1"}, IFACE + "NoSuchVM")
    watcher.close()


def case_permission(f):
    """Mutations need uid 0, the daemon's uid or the admin group; reads need only the socket.
    Access is checked first: a SetHandles naming devices this host does not have is refused for
    who asks, not answered with what the host has (InvalidParameter "no network interface")."""
    os.chmod(f.d.socket, 0o666)
    f.register("pm")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgroups([])
        os.setgid(1)
        os.setuid(1)  # "daemon": neither root, nor the daemon user, nor in an admin group
        c = Varlink(f.d.socket)
        out = {}
        for method, params in [("Register", {"id": "x", "api_sock": f.sock("x")}),
                               ("SetHandles", {"id": "pm", "pid": 1, "tap": "bgr-nosuch0",
                                               "loops": ["/dev/loop99999"]}),
                               ("ClearHandles", {"id": "pm"}), ("Unregister", {"id": "pm"})]:
            try:
                c.call(IFACE + method, params)
                out[method] = "allowed"
            except VarlinkError as e:
                out[method] = e.error
        out["List"] = len(c.call(IFACE + "List")["vms"])
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = json.loads(os.read(r, 65536))
    for method in ("Register", "SetHandles", "ClearHandles", "Unregister"):
        check(out[method] == IFACE + "PermissionDenied", f"{method} by uid 1: {out}")
    check(out["List"] == 1, f"reads are open: {out}")
    check("denied to uid 1" in f.d.log or f.d.read_until("denied to uid 1", 2), f.d.log)


def in_child(uid, gid, groups, fn):
    """fn() run in a forked child with those credentials; its JSON-able result, or the
    repr of what it raised (never raised here: the child must not run the test's exits)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            out = fn()
        except BaseException as e:  # noqa: BLE001 - the parent reports it
            out = repr(e)
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as fh:
        return json.loads(fh.read())


def mutation_by(f, uid, gid, groups, vm_id):
    """Register vm_id, asked by a child with those credentials: "allowed" for an admin, the
    error (PermissionDenied) for a reader."""
    def register():
        try:
            Varlink(f.d.socket).call(IFACE + "Register", {"id": vm_id, "api_sock": f.sock(vm_id)})
            return "allowed"
        except VarlinkError as e:
            return e.error
    return in_child(uid, gid, groups, register)


def case_many_groups(f):
    """Admin membership is read from all of a peer's groups, however many: SO_PEERGROUPS
    fails with ERANGE past its buffer and copies nothing, and a list taken from that zeroed
    buffer said gid 0 (the admin group here) for a reader in 70 groups. Here: 70 groups
    without gid 0 are a reader; with gid 0 the 70th, an admin."""
    os.chmod(f.d.socket, 0o666)
    many = list(range(60000, 60070))
    got = mutation_by(f, 1, 1, many, "mg1")
    check(got == IFACE + "PermissionDenied", f"a reader in 70 groups (no gid 0) got {got}")
    got = mutation_by(f, 1, 1, many[:69] + [0], "mg2")
    check(got == "allowed", f"a member of the admin group (its 70th) got {got}")
    got = mutation_by(f, 1, 1, [0], "mg3")
    check(got == "allowed", f"a member of the admin group (its only one) got {got}")
    ids = sorted(v["id"] for v in f.c.call(IFACE + "List")["vms"])
    check(ids == ["mg2", "mg3"], f"registered: {ids}")
    print("70 groups without the admin group: PermissionDenied; with it 70th or alone: admitted")


def case_denials_flood(f):
    """A reader sends 5,000 mutations back to back, each denied. Every one is answered
    PermissionDenied, but the log (the journal, whose own rate limit would then drop the
    admissions and events an operator audits) gets at most 10 denial lines a second (the
    next denial logged says how many went unlogged); an admin's call right after is
    logged."""
    os.chmod(f.d.socket, 0o666)
    n = 5000

    def flood():
        c = Varlink(f.d.socket)
        msg = json.dumps({"method": IFACE + "Register", "parameters": {
            "id": "flood", "api_sock": f.sock("flood")}}).encode() + b"\0"
        t0 = time.monotonic()
        errors = {}
        for _ in range(n // 100):  # 100 at a time: bangerd stops reading a non-reader
            c.sock.sendall(msg * 100)
            for _ in range(100):
                reply = c.receive()
                key = reply.get("error", "ok") if reply else "closed"
                errors[key] = errors.get(key, 0) + 1
        return {"errors": errors, "secs": time.monotonic() - t0}
    out = in_child(1, 1, [], flood)
    check(isinstance(out, dict), f"the reader failed: {out}")
    check(out["errors"] == {IFACE + "PermissionDenied": n}, f"the reader's replies: {out}")
    f.register("after-flood")
    check(f.d.read_until(": io.banger.Handles.Register after-flood", 5),
          f"the admin's Register was not logged:\n{f.d.log[-3000:]}")
    lines = [ln for ln in f.d.log.splitlines() if " denied to uid 1 " in ln]
    bound = 10 * (int(out["secs"]) + 2)
    check(0 < len(lines) <= bound,
          f"{len(lines)} denial lines for {n} denials in {out['secs']:.2f} s (bound {bound})")
    print(f"figure: {n} denials in {out['secs']:.2f} s, {len(lines)} logged")


def case_list_large(f):
    """A List larger than twice max_output_per_conn (256 KiB) is one reply, not a reason
    to drop the client: root and a reader (under max_output_total) both get all of it."""
    n = 2000
    long_name = "x" * 200
    for i in range(n):
        vm_id = f"big{i:04d}"
        f.register(vm_id, planned={"loop_files": [
            os.path.join(f.d.loop_root, vm_id, f"{long_name}-{k}.img") for k in range(2)]})
    vms = f.c.call(IFACE + "List")["vms"]
    check(len(vms) == n, f"root's List: {len(vms)} VMs")
    size = len(json.dumps({"parameters": {"vms": vms}}))
    check(size > 2 * 256 * 1024, f"the List reply is only {size} bytes")
    os.chmod(f.d.socket, 0o666)
    got = in_child(1, 1, [], lambda: len(Varlink(f.d.socket, timeout=30).call(IFACE + "List")
                                         ["vms"]))
    check(got == n, f"a reader's List: {got}")
    print(f"figure: List of {n} VMs: {size} bytes, answered to root and to a reader")


def case_partial_deadline(f):
    """A message must be whole 5 s after its own first byte. (1) A sent in two halves 3 s
    apart, the second half followed at once by the start of B, whose rest comes 3.5 s
    later: both are answered (B is 3.5 s old, though A began 6.5 s before). (2) A message
    trickled a byte every 0.5 s is closed about 5 s after its first byte: the trickle does
    not move the deadline. The sleeps are the slow client's pace, not waits for bangerd."""
    msg = json.dumps({"method": IFACE + "GetStatus"}).encode() + b"\0"
    half = len(msg) // 2
    c = f.d.client()
    t0 = time.monotonic()
    c.sock.sendall(msg[:half])
    time.sleep(3.0)
    c.sock.sendall(msg[half:] + msg[:half])
    time.sleep(3.5)
    c.sock.sendall(msg[half:])
    for which in ("A", "B"):
        reply = c.receive()
        check(reply is not None and "parameters" in reply,
              f"message {which} ({time.monotonic() - t0:.1f} s in): {reply}")
    c.close()
    c = f.d.client()
    t0 = time.monotonic()
    closed = None
    for i in range(len(msg) - 1):  # never the NUL: the message never ends
        try:
            c.sock.sendall(msg[i:i + 1])
        except OSError:
            closed = time.monotonic() - t0
            break
        ready, _, _ = select.select([c.sock], [], [], 0.5)
        if ready:
            check(c.receive() is None, "bangerd answered a message that never ended")
            closed = time.monotonic() - t0
            break
    check(closed is not None and 4.5 <= closed <= 7.0,
          f"a trickled message was closed after {closed} s, want about 5")
    print(f"figure: two messages 6.5 s apart answered; a trickle closed after {closed:.2f} s")


def case_restart_100(f):
    """100 VMs with handles on live stubs survive a SIGTERM and a new start unchanged."""
    for i in range(100):
        # A handful with real loops and taps: SetHandles records only attached loops, by
        # their diskseq, and taps that exist, by their ifindex.
        real = {"loops": [f.k.loop(os.path.join(f.d.loop_root, f"r{i}.img"))],
                "tap": f.k.tap(f"r{i}")} if i < 4 else {}
        f.running_vm(f"r{i:03d}", **real)
    before = f.c.call(IFACE + "List")["vms"]
    check(all("loop_diskseq" in v["handles"] and "tap_ifindex" in v["handles"]
              for v in before[:4]), f"diskseqs and ifindexes: {before[:4]}")
    check(len(before) == 100, f"{len(before)} VMs")
    check(f.d.stop() == 0, "SIGTERM exit status")
    f.d = Daemon(root=f.d.dir)
    f.c = f.d.client()
    after = f.c.call(IFACE + "List")["vms"]
    check(after == before, "List after the restart differs")
    alive = [f.c.call(IFACE + "IsAlive", {"id": v["id"]})["alive"] for v in after]
    check(alive == ["alive"] * 100, f"re-adopted: {alive.count('alive')} of 100 alive")


def case_sigterm_drain(f):
    """SIGTERM: calls already sent are answered, then the daemon exits 0."""
    f.register("dr")
    batch = b"".join(json.dumps({"method": IFACE + "IsAlive", "parameters": {"id": "dr"}}).encode()
                     + b"\0" for _ in range(200))
    f.c.send_raw(batch)
    f.d.proc.send_signal(signal.SIGTERM)
    replies = 0
    while replies < 200:
        reply = f.c.receive()
        if reply is None:
            break
        check(reply == {"parameters": {"alive": "dead"}}, str(reply))
        replies += 1
    check(f.d.wait_exit() == 0, "exit status")
    check(replies == 200, f"{replies} of 200 pipelined calls answered before exit")


def storage_full():
    """The state dir's filesystem is full (a small tmpfs, filled): Register answers
    StorageFailed naming ENOSPC and changes nothing; SetHandles keeps the handles it verified
    (persisted false, DESIGN section 2) and says why in its persist_failed event; once space
    is freed the same Register succeeds and the handles reach the disk."""
    require_root()
    root = tempfile.mkdtemp(prefix="banger-test-full-")
    state = os.path.join(root, "state")
    os.makedirs(state)
    sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "bangertest-full", state)
    f = None
    try:
        f = Fixture(root=root)
        f.register("before")
        watcher = f.d.client().watch()
        listed = f.c.call(IFACE + "List")
        filler = os.path.join(state, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)  # root's: every page left
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            check(e.errno == errno.ENOSPC, f"filling the tmpfs: {e}")
        finally:
            os.close(fd)
        files = {k: v for k, v in snapshot(state).items() if k != filler}

        e = f.c.expect_error(IFACE + "Register", {"id": "full", "api_sock": f.sock("full")},
                             IFACE + "StorageFailed")
        want = os.path.join(state, "vms", "full", "vm.json")
        check(e == {"id": "full", "file": want,
                    "reason": "No space left on device (ENOSPC)"}, f"StorageFailed: {e}")
        check({k: v for k, v in snapshot(state).items() if k != filler} == files,
              f"a failed Register changed the state dir (a record, a temp or its dir left)")
        check(f.c.call(IFACE + "List") == listed, "a failed Register changed the cache")
        f.still_served()

        s = f.stub("before")
        reply = f.c.call(IFACE + "SetHandles", {"id": "before", "pid": s.pid})
        check(reply["persisted"] is False and reply["vm"]["handles"]["pid"] == s.pid,
              f"SetHandles on a full disk: {reply}")
        events = []
        while not any(ev["kind"] == "handles_set" for ev in events):
            events.append(watcher.next_event())
        failed = [ev for ev in events if ev["kind"] == "persist_failed"]
        check(failed and "No space left on device (ENOSPC)" in failed[0]["detail"],
              f"persist_failed does not name ENOSPC: {events}")
        check(f.c.call(IFACE + "IsAlive", {"id": "before"})["alive"] == "alive",
              "the handles verified on a full disk are kept")

        os.unlink(filler)
        vm = f.c.call(IFACE + "Register", {"id": "full", "api_sock": f.sock("full")})["vm"]
        check(vm["id"] == "full" and vm["state"] == "starting", f"Register after freeing: {vm}")
        with open(want) as fh:
            check(json.load(fh)["id"] == "full", "vm.json written once there is space")
        while watcher.next_event()["kind"] != "persist_recovered":
            pass
        with open(os.path.join(f.d.vm_dir("before"), "handles.json")) as fh:
            check(json.load(fh)["pid"] == s.pid, "handles.json written once there is space")
        check([v["id"] for v in f.c.call(IFACE + "List")["vms"]] == ["before", "full"],
              "both records listed")
        watcher.close()
        print("Register: StorageFailed naming ENOSPC, nothing changed; SetHandles kept its "
              "handles and wrote them once the disk had room")
    finally:
        if f:
            f.close()
        subprocess.run(["umount", state], check=False)
        shutil.rmtree(root, ignore_errors=True)


FIXTURE_ARGS = {"case_set_waits_for_listener": {"extra": ["--api-sock-wait-ms", "1000"]},
                "case_many_groups": {"extra": ["--admin-group", "root"]}}
CASES = {name[5:].replace("_", "-"):
         (lambda fn, kw: lambda: with_fixture(fn, **kw))(fn, FIXTURE_ARGS.get(name, {}))
         for name, fn in list(globals().items()) if name.startswith("case_")}
for name, action in list(globals().items()):
    if name.startswith("bad_") and callable(action) and name != "bad_input":
        CASES[name.replace("_", "-")] = (lambda a: lambda: with_fixture(bad_input(a)))(action)

CASES["storage-full"] = storage_full

if __name__ == "__main__":
    run_cases(CASES)
