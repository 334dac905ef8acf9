#!/usr/bin/env python3
"""Which process is a VM's firecracker: kernel facts, never strings (DESIGN §4).

A process IS the firecracker of api socket S only when its executable has a
firecracker name of the policy AND it holds the listening AF_UNIX socket
whose filesystem node is S as the host sees it. Every case runs a real VM
(a real tap, two real loops, a stub firecracker started as root listening
on the VM's api socket in a root-owned 0755 dir) and then an attack by a
REAL unprivileged account made for the test: copies of the stub in the
attacker's own dir carrying the VM's argv, a connection to the socket, a
private mount namespace with a socket at the same path string, the VM's
listening socket itself handed over. The real VM must stay the VM: kept
with its real pid, watched, its tap and loops untouched; the impostor is
never adopted. Each case ends by killing the real firecracker and waiting
for the teardown that proves bangerd still watched the right pid.

One case per meson test (argv[1]); every wait is for an event and bounded;
taps, loops, temp dirs, the account and the netns go on every exit path.
"""
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bangertest import (IFACE, STUB, Account, Daemon, Stub, check, fail,  # noqa: E402
                        require_root, run_cases, skip, status_of)
from bangertest import Kernel, link_exists, loops_on  # noqa: E402

EVENT_BOUND = 10.0  # seconds for any one event (exited, torn_down, identity_conflict)


def unix_sockets(pid):
    """The AF_UNIX sockets pid holds, as its own network namespace lists them:
    {socket inode: {"listening": bool, "state": int, "path": str}}."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            held.add(int(link[len("socket:["):-1]))
    found = {}
    with open(f"/proc/{pid}/net/unix") as fh:
        next(fh)
        for line in fh:
            cols = line.split()
            ino = int(cols[6])
            if ino in held:
                found[ino] = {"listening": bool(int(cols[3], 16) & 0x10000),  # __SO_ACCEPTCON
                              "state": int(cols[5], 16),
                              "path": cols[7] if len(cols) > 7 else ""}
    return found


def listeners(pid, path=None):
    """Socket inodes of the listening AF_UNIX sockets pid holds (bound to path, if given)."""
    return {ino for ino, s in unix_sockets(pid).items()
            if s["listening"] and (path is None or s["path"] == path)}


def names_pid(text, pid):
    return re.search(rf"(?<!\d){pid}(?!\d)", text or "") is not None


class Events:
    """A Watch stream on the current daemon, read with a deadline."""

    def __init__(self, daemon):
        self.w = daemon.client().watch()
        self.seen = []

    def wait_for(self, pred, what, timeout=EVENT_BOUND, refuse=None):
        """The first event that pred accepts; fails if refuse accepts one before it, or at
        the bound."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"no {what} within {timeout} s; events seen: {self.seen}")
            self.w.sock.settimeout(left)
            try:
                ev = self.w.next_event()
            except (TimeoutError, socket.timeout):
                fail(f"no {what} within {timeout} s; events seen: {self.seen}")
            self.seen.append(ev)
            if refuse and refuse(ev):
                fail(f"{ev} came before {what}; events seen: {self.seen}")
            if pred(ev):
                return ev

    def close(self):
        self.w.close()


class Attacker:
    """A real unprivileged account with its own 0755 dir (in a root-owned temp dir, outside
    every api-socket and loop root) holding its copies of the stub."""

    def __init__(self):
        self.account = Account()
        self.top = tempfile.mkdtemp(prefix="banger-atk-")
        os.chmod(self.top, 0o755)
        self.home = os.path.join(self.top, self.account.name)
        os.mkdir(self.home, 0o755)
        os.chown(self.home, self.account.uid, self.account.gid)

    def copy_stub(self, name):
        """The attacker's copy of the stub firecracker under name, in its own dir."""
        dst = os.path.join(self.home, name)
        if not os.path.exists(dst):
            shutil.copyfile(STUB, dst)
            os.chown(dst, self.account.uid, self.account.gid)
            os.chmod(dst, 0o755)
        return dst

    def path(self, name):
        return os.path.join(self.home, name)

    def remove(self):
        try:
            self.account.remove()
        finally:
            shutil.rmtree(self.top, ignore_errors=True)


class VM:
    def __init__(self, vm_id, sock, tap, loops, files):
        self.id, self.sock, self.tap, self.loops, self.files = vm_id, sock, tap, loops, files
        self.real = None


class Fixture:
    def __init__(self, tag, attacker=True):
        require_root()
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun: cannot create tap devices here")
        self.k = Kernel(tag)
        self.stubs = []
        self.impostors = []
        self.d = None
        self.c = None
        self.root = None
        self.atk = None
        self.netns = None
        try:
            self.d = Daemon()
            self.root = self.d.dir
            self.c = self.d.client()
            # The attacker can walk to the api sockets (to connect, or to mount over a dir)
            # but write none of the dirs on the way.
            for d in (self.root, self.d.api_root):
                os.chmod(d, 0o755)
            if attacker:
                self.atk = Attacker()
        except BaseException:
            self.close()
            raise

    # --- the real VM ---

    def vm(self, vm_id):
        """Register a VM holding a real tap and two real loops; its api socket dir is root's,
        0755. The real firecracker is started by start_real()."""
        sock_dir = os.path.join(self.d.api_root, vm_id)
        os.mkdir(sock_dir)
        os.chmod(sock_dir, 0o755)
        st = os.stat(sock_dir)
        check(st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755,
              f"{sock_dir}: uid {st.st_uid} mode {oct(st.st_mode)}, want root's 0755")
        sock = os.path.join(sock_dir, "api.sock")
        tap = self.k.tap(vm_id[-2:])
        files = [os.path.join(self.d.loop_root, f"{vm_id}-{i}.img") for i in range(2)]
        loops = [self.k.loop(p) for p in files]
        self.c.call(IFACE + "Register", {"id": vm_id, "api_sock": sock})
        return VM(vm_id, sock, tap, loops, files)

    def start_real(self, vm, before_ready=None, **stub_args):
        """The VM's real firecracker, as root, listening on its api socket; then SetHandles.
        before_ready: what must happen before the stub can say ready (a handoff's other end)."""
        s = Stub(vm.sock, wait=before_ready is None, **stub_args)
        self.stubs.append(s)
        if before_ready:
            before_ready()
            s.wait_ready()
        check(listeners(s.pid, vm.sock),
              f"the real stub {s.pid} does not listen on {vm.sock}: {unix_sockets(s.pid)}")
        vm.real = s
        self.c.call(IFACE + "SetHandles", {"id": vm.id, "pid": s.pid, "tap": vm.tap,
                                           "loops": vm.loops})
        return s

    # --- the attacker's processes ---

    def impostor(self, vm, name="firecracker", argv=None, extra=(), wrapper=(), wait=True):
        """A copy of the stub named name, run from the attacker's dir as the attacker. argv:
        its full argv (default: its own path, --api-sock and the VM's socket)."""
        exe = self.atk.copy_stub(name)
        s = Stub(vm.sock, exe=exe, argv=argv, extra=extra, wrapper=wrapper, wait=wait,
                 **self.atk.account.as_user())
        self.impostors.append(s)
        acct = self.atk.account
        st = status_of(s.pid)
        check(st["Uid"].split() == [str(acct.uid)] * 4 and st["Gid"].split() == [str(acct.gid)] * 4
              and st["Groups"] == "",
              f"impostor {s.pid} should run as {acct.name} ({acct.uid}:{acct.gid}, no other "
              f"groups): Uid {st['Uid']} Gid {st['Gid']} Groups {st['Groups']!r}")
        if not wrapper:  # in its own user namespace it holds capabilities over that one only
            check(int(st["CapEff"], 16) == 0, f"impostor {s.pid} has capabilities {st['CapEff']}")
        return s

    def who(self, pid, vm=None):
        if vm and vm.real and pid == vm.real.pid:
            return f"{pid} (the real firecracker)"
        for s in self.impostors:
            if s.pid == pid:
                return f"{pid} (the impostor {s.exe}, uid {self.atk.account.uid})"
        return str(pid)

    # --- bangerd ---

    def restart(self):
        """Stop bangerd (SIGTERM, clean) and start a new one on the same state dir."""
        self.c.close()
        check(self.d.stop() == 0, f"bangerd did not stop cleanly:\n{self.d.log}")
        self.d = Daemon(root=self.root)
        self.c = self.d.client()

    def reconcile(self, vm):
        report = self.c.call(IFACE + "Reconcile")
        entries = {e["id"]: e for e in report["vms"]}
        check(vm.id in entries, f"no reconcile entry for {vm.id}: {report}")
        return entries[vm.id], report["orphans"]

    # --- checks ---

    def resources_there(self, vm, when):
        check(link_exists(vm.tap), f"{when}: the live VM's tap {vm.tap} was torn down")
        for img, loop in zip(vm.files, vm.loops):
            check(loops_on(img) == [loop],
                  f"{when}: the live VM's loop {loop} on {img} was torn down: {loops_on(img)}")

    def nothing_left(self, vm):
        check(not link_exists(vm.tap), f"tap {vm.tap} leaked")
        for img in vm.files:
            check(loops_on(img) == [], f"loop on {img} leaked: {loops_on(img)}")

    def still_the_vm(self, vm, when, orphans_allowed=()):
        """The real firecracker is the VM: resources there, handles, liveness and reconcile
        all name the real pid; no impostor is reported as the VM (nor, unless it really
        listens under the roots, as an orphan)."""
        self.resources_there(vm, when)
        check(vm.real.proc.poll() is None, f"{when}: the real firecracker died")
        pid = self.c.call(IFACE + "GetHandles", {"id": vm.id})["handles"]["pid"]
        check(pid == vm.real.pid,
              f"{when}: GetHandles names pid {self.who(pid, vm)}, want the real firecracker "
              f"{vm.real.pid}: bangerd adopted a process by its argv")
        alive = self.c.call(IFACE + "IsAlive", {"id": vm.id})["alive"]
        check(alive == "alive", f"{when}: IsAlive says {alive}, want alive")
        entry, orphans = self.reconcile(vm)
        check(entry["action"] == "kept" and entry.get("pid") == vm.real.pid,
              f"{when}: Reconcile says {entry} (pid {self.who(entry.get('pid'), vm)}), want "
              f"kept with the real pid {vm.real.pid}")
        self.resources_there(vm, f"{when}, after Reconcile")
        self.no_impostor_orphans(vm, orphans, when, orphans_allowed)
        pid = self.c.call(IFACE + "GetHandles", {"id": vm.id})["handles"]["pid"]
        check(pid == vm.real.pid, f"{when}: after Reconcile GetHandles names pid "
              f"{self.who(pid, vm)}, want {vm.real.pid}")
        for s in self.impostors:
            check(s.proc.poll() is None, f"impostor {s.pid} was killed: nobody kills anything")

    def no_impostor_orphans(self, vm, orphans, when, allowed=()):
        for o in orphans:
            check(not (vm.real and o["pid"] == vm.real.pid),
                  f"{when}: the real firecracker {vm.real.pid} is reported as an orphan: "
                  f"{orphans}")
            check(not any(o["pid"] == s.pid for s in self.impostors if s not in allowed),
                  f"{when}: {self.who(o['pid'], vm)} is reported as an orphan firecracker on "
                  f"{o['api_sock']}, but it listens on no socket there (argv only): {orphans}")

    def startup_log_kept(self, vm, orphans_allowed=()):
        """The startup reconcile of the current daemon kept the VM and reported no impostor."""
        check("reconcile: 1 VMs: 1 kept" in self.d.log,
              f"the startup reconcile did not keep {vm.id}:\n{self.d.log}")
        for s in self.impostors:
            if s not in orphans_allowed:
                check(f"orphan firecracker pid {s.pid} " not in self.d.log,
                      f"the startup reconcile reported impostor {s.pid} as an orphan:\n"
                      f"{self.d.log}")
        check(f"orphan firecracker pid {vm.real.pid} " not in self.d.log,
              f"the startup reconcile reported the real firecracker {vm.real.pid} as an "
              f"orphan (something else was adopted in its place):\n{self.d.log}")

    def kill_real_and_see_teardown(self, vm):
        """kill -9 the real firecracker: bangerd watched that pid, so it says exited and tears
        the VM down."""
        ev = Events(self.d)
        try:
            os.kill(vm.real.pid, signal.SIGKILL)
            exited = ev.wait_for(
                lambda e: e["kind"] == "exited" and e.get("id") == vm.id,
                f"exited event for {vm.id} after kill -9 of the real firecracker {vm.real.pid}",
                refuse=lambda e: e.get("id") == vm.id and e["kind"] in ("torn_down",
                                                                         "teardown_failed"))
            check(exited.get("pid") == vm.real.pid,
                  f"exited names pid {self.who(exited.get('pid'), vm)}, want {vm.real.pid}")
            torn = ev.wait_for(
                lambda e: e.get("id") == vm.id and e["kind"] in ("torn_down", "teardown_failed"),
                f"torn_down event for {vm.id}")
            check(torn["kind"] == "torn_down", f"teardown after exit: {torn}")
        finally:
            ev.close()
        vm.real.proc.wait()
        self.nothing_left(vm)
        for s in self.impostors:
            check(s.proc.poll() is None, f"impostor {s.pid} was killed: nobody kills anything")

    def close(self):
        errors = []
        for step in (self._kill_stubs, self._remove_attacker, self.k.cleanup,
                     self._remove_netns, self._stop_daemon):
            try:
                step()
            except BaseException as e:  # every step runs, whatever failed before
                errors.append(f"{step.__name__}: {e!r}")
        if errors:
            print("cleanup problems: " + "; ".join(errors), file=sys.stderr)

    def _kill_stubs(self):
        for s in self.stubs + self.impostors:
            s.kill()

    def _remove_attacker(self):
        if self.atk:
            self.atk.remove()

    def _remove_netns(self):
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def _stop_daemon(self):
        if self.c:
            self.c.close()
        if self.d:
            self.d.finish()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def stderr_so_far(stub):
    """What a running stub has said on stderr (it says why a bind or connect failed)."""
    fd = stub.proc.stderr.fileno()
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def with_fixture(tag, attacker=True):
    def wrap(fn):
        def run():
            f = None
            try:
                f = Fixture(tag, attacker)
                fn(f)
            finally:
                if f:
                    f.close()
        return run
    return wrap


def argv_only(s):
    """The impostor could not bind the VM's socket (the dir is root's): it holds no listener."""
    check(not listeners(s.pid), f"impostor {s.pid} listens: {unix_sockets(s.pid)} (the api "
          "socket dir must not be writable by the attacker)")


def impostor_before_real(f, vm, impostors):
    """The impostors run before the real firecracker starts: lower pids, the argv of the VM.
    Then bangerd restarts (a startup reconcile) and Reconcile is called."""
    for s in impostors:
        argv_only(s)
    real = vm.real
    for s in impostors:
        if s.pid > real.pid:
            print(f"note: pid wrapped: impostor {s.pid} > real {real.pid}")
    f.still_the_vm(vm, "with the impostor running")
    f.restart()
    f.startup_log_kept(vm)
    f.still_the_vm(vm, "after bangerd restarted")
    f.kill_real_and_see_teardown(vm)


@with_fixture("i1")
def case_impostor_same_argv_first(f):
    """A copy named firecracker, the attacker's, with exactly the VM's argv (cmdline byte for
    byte), started before the real firecracker."""
    vm = f.vm("vm-i1")
    imp = f.impostor(vm, argv=[STUB, "--api-sock", vm.sock])
    f.start_real(vm)
    with open(f"/proc/{imp.pid}/cmdline", "rb") as a, \
         open(f"/proc/{vm.real.pid}/cmdline", "rb") as b:
        check(a.read() == b.read(), "the impostor's cmdline is the VM's")
    impostor_before_real(f, vm, [imp])


@with_fixture("i2")
def case_impostor_api_sock_equals(f):
    """The same with --api-sock=PATH (for the real firecracker too)."""
    vm = f.vm("vm-i2")
    argv = [STUB, f"--api-sock={vm.sock}"]
    imp = f.impostor(vm, argv=argv)
    f.start_real(vm, argv=argv)
    impostor_before_real(f, vm, [imp])


@with_fixture("i3")
def case_impostor_renamed(f):
    """A renamed copy (fc-impostor) with the VM's argv, and a copy named firecracker run with
    a renamed argv[0]."""
    vm = f.vm("vm-i3")
    renamed = f.impostor(vm, name="fc-impostor", argv=[STUB, "--api-sock", vm.sock])
    argv0 = f.impostor(vm, argv=["fc-renamed", "--api-sock", vm.sock])
    with open(f"/proc/{argv0.pid}/comm") as fh:
        check(fh.read().strip() == "firecracker", "comm follows the executable's name")
    f.start_real(vm)
    impostor_before_real(f, vm, [renamed, argv0])


@with_fixture("i4")
def case_impostor_connects(f):
    """A process named firecracker (the attacker's) connected to the VM's api socket, holding
    the connection, with --api-sock SOCK in its argv."""
    vm = f.vm("vm-i4")
    f.start_real(vm)
    os.chmod(vm.sock, 0o666)  # connecting needs write permission on the socket node
    imp = f.impostor(vm, extra=["--connect-to", vm.sock])
    socks = unix_sockets(imp.pid)
    check(any(s["state"] == 3 for s in socks.values()) and not listeners(imp.pid),
          f"the impostor should hold a connection and no listener: {socks} "
          f"(its stderr: {stderr_so_far(imp)!r})")
    f.still_the_vm(vm, "with a connected impostor")
    f.restart()
    f.startup_log_kept(vm)
    f.still_the_vm(vm, "after bangerd restarted")
    f.kill_real_and_see_teardown(vm)


def userns_available():
    knob = "/proc/sys/kernel/unprivileged_userns_clone"
    if os.path.exists(knob):
        with open(knob) as fh:
            if fh.read().strip() == "0":
                return f"{knob} is 0"
    with open("/proc/sys/user/max_user_namespaces") as fh:
        if int(fh.read()) <= 0:
            return "/proc/sys/user/max_user_namespaces is 0"
    knob = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
    if os.path.exists(knob):
        with open(knob) as fh:
            if fh.read().strip() != "0":
                return f"{knob} is set"
    return None


@with_fixture("i5")
def case_impostor_userns_mount(f):
    """The attacker's own user + mount namespace: a tmpfs over the VM's api socket dir and a
    listener bound at the same path string there, a different node from the host's."""
    why = userns_available()
    if why:
        skip(f"unprivileged user namespaces are disabled ({why})")
    vm = f.vm("vm-i5")
    sock_dir = os.path.dirname(vm.sock)
    # $0 is the stub (Stub puts its exe first after the wrapper); exec keeps the pid.
    wrapper = ["unshare", "-Urm", "--", "sh", "-c",
               f'mount -t tmpfs none "{sock_dir}" && exec "$0" "$@"']
    imp = f.impostor(vm, argv=[STUB, "--api-sock", vm.sock], wrapper=wrapper)
    check(listeners(imp.pid, vm.sock),
          f"the impostor does not listen at {vm.sock} in its namespace: {unix_sockets(imp.pid)}")
    f.start_real(vm)
    host = os.stat(vm.sock)
    private = os.stat(f"/proc/{imp.pid}/root{vm.sock}")
    check((host.st_dev, host.st_ino) != (private.st_dev, private.st_ino),
          "the impostor's socket node should differ from the host's")
    check(not listeners(imp.pid) & listeners(vm.real.pid),
          "the impostor holds the real listener")
    # Its socket is bound at a path under the roots (in its own namespace): it may be
    # reported as an orphan, never as the VM.
    f.still_the_vm(vm, "with a namespaced impostor", orphans_allowed=[imp])
    f.restart()
    f.startup_log_kept(vm, orphans_allowed=[imp])
    f.still_the_vm(vm, "after bangerd restarted", orphans_allowed=[imp])
    f.kill_real_and_see_teardown(vm)


@with_fixture("i6")
def case_dead_vm_with_impostor(f):
    """The VM died while bangerd was down; an impostor carries its argv: the VM is dead, torn
    down, and the impostor is not adopted."""
    vm = f.vm("vm-i6")
    f.start_real(vm)
    f.c.close()
    check(f.d.stop() == 0, f"bangerd did not stop cleanly:\n{f.d.log}")
    vm.real.kill()  # kill -9, reaped
    imp = f.impostor(vm, argv=[STUB, "--api-sock", vm.sock])
    argv_only(imp)
    f.resources_there(vm, "before bangerd started again")
    f.d = Daemon(root=f.root)
    f.c = f.d.client()
    # The startup reconcile, its teardowns included, is over when bangerd says ready.
    check(f"reconcile: vm {vm.id} torn_down" in f.d.log,
          f"the startup reconcile did not tear {vm.id} down (impostor {imp.pid} adopted?):\n"
          f"{f.d.log}")
    check(f"orphan firecracker pid {imp.pid} " not in f.d.log,
          f"the impostor {imp.pid} was reported as an orphan:\n{f.d.log}")
    f.nothing_left(vm)
    listed = {v["id"]: v for v in f.c.call(IFACE + "List")["vms"]}
    check(listed[vm.id]["state"] == "stopped" and "handles" not in listed[vm.id],
          f"{vm.id}: {listed[vm.id]}")
    alive = f.c.call(IFACE + "IsAlive", {"id": vm.id})["alive"]
    check(alive == "dead", f"IsAlive says {alive}, want dead")
    entry, orphans = f.reconcile(vm)
    check(entry["action"] in ("clean", "torn_down") and entry.get("pid") is None,
          f"Reconcile says {entry} (pid {f.who(entry.get('pid'), vm)}), want a dead VM")
    vm.real = None
    f.no_impostor_orphans(vm, orphans, "after the restart")
    check(imp.proc.poll() is None, "the impostor was killed: nobody kills anything")


@with_fixture("i10")
def case_listener_held_twice(f):
    """The real firecracker holds its listener in three fds (dups): one process, one
    holding, not three claimants. bangerd restarts: the VM is adopted, not ambiguous."""
    vm = f.vm("vm-i10")
    f.start_real(vm, extra=["--dup-listener", "2"])
    check(len(listeners(vm.real.pid, vm.sock)) == 1 and
          sum(1 for fd in os.listdir(f"/proc/{vm.real.pid}/fd")
              if os.readlink(f"/proc/{vm.real.pid}/fd/{fd}").startswith("socket:")) >= 3,
          f"the real stub does not hold its listener thrice: {unix_sockets(vm.real.pid)}")
    f.restart()
    f.startup_log_kept(vm)
    f.still_the_vm(vm, "after bangerd restarted")
    f.kill_real_and_see_teardown(vm)


NETNS_FLOOD = 300  # more network namespaces than the helper once had room for (256)


@with_fixture("i11")
def case_impostor_netns_flood(f):
    """300 firecracker-named processes of the attacker, each in its own user and network
    namespace: each namespace is one more sock_diag dump for the helper. A fixed table of
    256 once made the rest "uninspected", so every VM the scan did not find was unknown and
    nothing of a dead VM was ever torn down while they ran. Now: the VM that died while
    bangerd was down is torn down at the restart."""
    why = userns_available()
    if why:
        skip(f"unprivileged user namespaces are disabled ({why})")
    vm = f.vm("vm-i11")
    f.start_real(vm)
    f.c.close()
    check(f.d.stop() == 0, f"bangerd did not stop cleanly:\n{f.d.log}")
    vm.real.kill()
    flood = [f.impostor(vm, argv=[STUB, "--api-sock", vm.sock], wrapper=["unshare", "-rn"])
             for _ in range(NETNS_FLOOD)]
    spaces = {os.stat(f"/proc/{imp.pid}/ns/net").st_ino for imp in flood}
    check(len(spaces) == NETNS_FLOOD, f"{len(spaces)} network namespaces among the impostors")
    f.d = Daemon(root=f.root)
    f.c = f.d.client()
    scan = re.search(r"call=startup-reconcile op=scan .*", f.d.log)
    check(scan and " uninspected=0 " in scan.group(0), f"the scan left processes:\n{f.d.log}")
    print(f"figure: startup scan, {NETNS_FLOOD} impostors in their own namespaces: "
          f"{scan.group(0)}")
    check(f"reconcile: vm {vm.id} torn_down" in f.d.log,
          f"the dead VM was not torn down:\n{f.d.log}")
    vm.real = None
    f.nothing_left(vm)
    for imp in flood:
        check(imp.proc.poll() is None, "an impostor was killed: nobody kills anything")


FLOOD_FDS = 400000  # readlinks of /proc/PID/fd/N at 1-5 us each: well past the budget below
FLOOD_SCAN_DEADLINE_MS = 200  # the SCAN deadline (the least bangerd.conf allows is 100)


@with_fixture("i9")
def case_impostor_fd_flood(f):
    """Unprivileged firecracker-named processes holding 400,000 fds between them (as many
    per process as the fd limit allows) cost the helper a readlink each. The VM died while
    bangerd was down, and bangerd restarts with a 200 ms SCAN deadline. Without a budget the
    walk outlasts the deadline, the helper is judged stuck and bangerd exits before READY,
    at every start. With it the walk stops in time and says so (cut_short): bangerd is
    ready, the dead VM is unknown and keeps its resources (nothing is torn down on unknown).
    Once those processes are gone, Reconcile tears it down."""
    per = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64, FLOOD_FDS)
    vm = f.vm("vm-i9")
    f.start_real(vm)
    f.c.close()
    check(f.d.stop() == 0, f"bangerd did not stop cleanly:\n{f.d.log}")
    vm.real.kill()
    flood = [f.impostor(vm, argv=[STUB, "--api-sock", vm.sock, "--hold-fds", str(per)])
             for _ in range(-(-FLOOD_FDS // per))]
    held = sum(len(os.listdir(f"/proc/{imp.pid}/fd")) for imp in flood)
    check(held >= FLOOD_FDS, f"{len(flood)} impostors hold {held} fds")
    f.d = Daemon(root=f.root, extra=["--helper-scan-timeout-ms", str(FLOOD_SCAN_DEADLINE_MS)])
    f.c = f.d.client()
    scan = re.search(r"call=startup-reconcile op=scan .*", f.d.log)
    check(scan and " cut_short=yes " in scan.group(0) and
          f" budget_ms={FLOOD_SCAN_DEADLINE_MS // 4 * 3} " in scan.group(0),
          f"the startup scan was not cut short at its budget:\n{f.d.log}")
    print(f"figure: startup scan, {len(flood)} impostors holding {held} fds: {scan.group(0)}")
    check("helper_stuck" not in f.d.log and "did not answer" not in f.d.log,
          f"the helper was judged stuck:\n{f.d.log}")
    why = (f"reconcile: vm {vm.id} unknown: the helper's scan ran out of its time budget "
           "before it had inspected every process")
    check(why in f.d.log, f"no reconcile line saying why:\n{f.d.log}")
    f.resources_there(vm, "after a scan cut short")
    st = f.c.call(IFACE + "GetStatus")
    check(st["helper_state"] == "ok", f"GetStatus: {st}")
    for imp in flood:
        imp.kill()
        f.impostors.remove(imp)
    entry, _ = f.reconcile(vm)
    check(entry["action"] == "torn_down", f"Reconcile once the impostors are gone: {entry}")
    vm.real = None
    f.nothing_left(vm)


@with_fixture("i7")
def case_listener_passed(f):
    """The VM's own listening socket is handed to the attacker's process (SCM_RIGHTS): two
    processes hold it. Liveness is unknown (an identity_conflict), never a switch; nothing is
    torn down; the real pid stays watched.

    The real stub sends its listener to a courier socket of the test (root; python3, not a
    firecracker name) so that SetHandles sees one holder; the test then passes it on to the
    attacker's --recv-listener and closes its own copy."""
    vm = f.vm("vm-i7")
    courier_dir = tempfile.mkdtemp(prefix="banger-courier-")  # root's, 0700
    fds = []
    try:
        courier_path = os.path.join(courier_dir, "courier.sock")
        courier = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        courier.bind(courier_path)
        courier.listen(1)
        courier.settimeout(EVENT_BOUND)

        def take_listener():
            # The stub is ready only once we ack: until then the fd is in flight.
            conn, _ = courier.accept()
            with conn:
                conn.settimeout(EVENT_BOUND)
                _, got, _, _ = socket.recv_fds(conn, 1, 1)
                fds.extend(got)
                conn.sendall(b"A")
        f.start_real(vm, before_ready=take_listener, extra=["--send-listener", courier_path])
        courier.close()
    finally:
        shutil.rmtree(courier_dir, ignore_errors=True)
    check(len(fds) == 1, f"the real stub passed {len(fds)} fds")
    passed = fds[0]
    real_listener = listeners(vm.real.pid, vm.sock)
    check(len(real_listener) == 1, f"real stub listeners: {unix_sockets(vm.real.pid)}")
    check(listeners(os.getpid(), vm.sock) == real_listener, "the courier holds the listener")

    events = Events(f.d)
    try:
        # Ready once its rendezvous listens; it acks once it holds what we send.
        rendezvous = f.atk.path("rendezvous.sock")
        att = f.impostor(vm, extra=["--recv-listener", rendezvous])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sender:
            sender.settimeout(EVENT_BOUND)
            sender.connect(rendezvous)
            socket.send_fds(sender, [b"L"], [passed])
            check(sender.recv(1) == b"A", f"the attacker {att.pid} did not ack the listener: "
                  f"{stderr_so_far(att)!r}")
        os.close(passed)  # now the real stub and the attacker hold it, nobody else
        check(listeners(att.pid, vm.sock) == real_listener,
              f"the attacker should hold the real listener {real_listener}: "
              f"{unix_sockets(att.pid)}")

        entry, orphans = f.reconcile(vm)
        check(entry["action"] == "unknown",
              f"Reconcile says {entry}, want unknown: the real firecracker {vm.real.pid} and "
              f"the attacker's {att.pid} both hold {vm.sock}'s listener (identity conflict)")
        check(names_pid(entry.get("reason"), vm.real.pid) and names_pid(entry.get("reason"),
                                                                         att.pid),
              f"the reason should name both pids {vm.real.pid} and {att.pid}: {entry}")
        conflict = events.wait_for(
            lambda e: e["kind"] == "identity_conflict" and e.get("id") == vm.id,
            f"identity_conflict event for {vm.id}")
        check(names_pid(conflict.get("detail"), vm.real.pid)
              and names_pid(conflict.get("detail"), att.pid),
              f"identity_conflict should name both pids {vm.real.pid} and {att.pid}: "
              f"{conflict}")
    finally:
        events.close()
    f.no_impostor_orphans(vm, [o for o in orphans if o["pid"] != att.pid], "Reconcile")
    f.resources_there(vm, "after the conflict")
    alive = f.c.call(IFACE + "IsAlive", {"id": vm.id})["alive"]
    check(alive in ("unknown", "alive"), f"IsAlive says {alive}, want unknown (or alive)")
    pid = f.c.call(IFACE + "GetHandles", {"id": vm.id})["handles"]["pid"]
    check(pid == vm.real.pid, f"GetHandles names pid {f.who(pid, vm)}, want {vm.real.pid}")
    print(f"two holders: Reconcile {entry}; IsAlive {alive}; event {conflict}")
    # The watched process exiting is the VM's exit: exited, then torn down.
    f.kill_real_and_see_teardown(vm)


@with_fixture("i8", attacker=False)
def case_netns_firecracker(f):
    """The real firecracker in its own network namespace (as a jailer may run it), its api
    socket on the host's filesystem."""
    f.netns = f"bgtid{os.getpid()}"
    subprocess.run(["ip", "netns", "add", f.netns], check=True, capture_output=True)
    vm = f.vm("vm-i8")
    real = f.start_real(vm, wrapper=["ip", "netns", "exec", f.netns])
    check(os.readlink(f"/proc/{real.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
          "the real stub should run in its own network namespace")
    f.still_the_vm(vm, "in a netns")
    f.restart()
    f.startup_log_kept(vm)
    f.still_the_vm(vm, "in a netns, after bangerd restarted")
    f.kill_real_and_see_teardown(vm)


CASES = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items())
         if name.startswith("case_")}

if __name__ == "__main__":
    run_cases(CASES)
