"""Shared support for banger's Python integration tests.

Daemon starts the real bangerd (as root, dropping to the test user) on a
throw-away state dir and control socket; Varlink is a minimal client that
speaks the wire protocol directly (NUL-terminated JSON, optional fds).
Every wait is for an event and has a bound; nothing sleeps and hopes.
"""
import array
import atexit
import ctypes
import hashlib
import json
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
BANGERD = os.environ.get("BANGERD", "")
HELPER = os.environ.get("BANGER_HELPER", "")
STUB = os.environ.get("BANGER_STUB_FIRECRACKER", "")
STUB_OTHER = os.environ.get("BANGER_STUB_OTHER", "")
TEST_USER = os.environ.get("BANGER_TEST_USER", "nobody")
PR_SET_PDEATHSIG = 1
# What AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer print when they find
# something (the ASan build of ./dev test runs the daemons' tests): in bangerd's log, or the
# helper's (the same pipe), it fails the test however the test itself went.
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
# bangerd's one line once it serves (daemon/startup.c); twice in one log is a second start.
READY = "ready: running as"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def skip(msg):
    print(f"SKIP: {msg}", flush=True)
    sys.exit(SKIP)


def require_root():
    if os.geteuid() != 0:
        skip("needs root to start bangerd with --user")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        skip(f"test user {TEST_USER} does not exist")
    if not BANGERD or not HELPER:
        fail("BANGERD and BANGER_HELPER must be set (run through meson test)")


def status_of(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def snapshot(root):
    """Every file under root with a digest of its content: 'no state file changed' is equality."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    result[path] = hashlib.sha256(f.read()).hexdigest()
            else:
                result[path] = "dir"
    return result


def memory_kib(pid):
    """(VmRSS, VmHWM) of pid in KiB, as /proc/PID/status says."""
    st = status_of(pid)
    return int(st["VmRSS"].split()[0]), int(st["VmHWM"].split()[0])


def sanitized(binary):
    """True when binary was built with AddressSanitizer (its RSS means nothing then), or when
    BANGER_TEST_SANITIZED=1 says so; BANGER_TEST_SANITIZED=0 says it is not."""
    forced = os.environ.get("BANGER_TEST_SANITIZED", "")
    if forced in ("0", "1"):
        return forced == "1"
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def raise_nofile(n):
    """RLIMIT_NOFILE of this process (and so of its children) to at least n, soft and hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n or hard < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), max(hard, n)))


def wait_pid_gone(pid, timeout):
    """True when pid exits within timeout (seconds), watched through a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def run_ok(argv, what=None, timeout=60, **popen):
    """Run a program to its end (subprocess.run's keyword arguments, text mode); the
    CompletedProcess. A non-zero exit or no exit within timeout seconds fails the test,
    naming what ran (what, else the command) and what it printed (stderr when captured,
    else stdout)."""
    what = what or " ".join(map(str, argv))
    try:
        r = subprocess.run(argv, timeout=timeout, text=True, **popen)
    except subprocess.TimeoutExpired:
        fail(f"{what} did not finish within {timeout} s")
    said = r.stderr if r.stderr is not None else r.stdout
    check(r.returncode == 0, f"{what} exited {r.returncode}: {(said or '').strip()}")
    return r


def wait_or_kill(proc, timeout):
    """Wait (bounded) for a child to exit; past the bound, SIGKILL and reap it. Its exit
    status."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_until(predicate, timeout, what):
    """Poll a condition that has no event to wait on (a file appearing), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def listening(path):
    """Whether a Unix socket bound at path listens, as the kernel's /proc/net/unix says.

    A launcher such as systemd-socket-activate binds (the file appears) before it listens,
    and a connect in between is refused; probing with a connect instead would itself start
    the activated service (or, with Accept=yes, one instance for the probe)."""
    acceptcon = 0x10000  # __SO_ACCEPTCON in the Flags column: listen() was called
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split(None, 7)
            if len(fields) == 8 and fields[7].rstrip("\n") == path:
                if int(fields[3], 16) & acceptcon:
                    return True
    return False


def wait_listening(path, timeout, what):
    """Wait, bounded, until the socket at path listens (see listening())."""
    wait_until(lambda: listening(path), timeout, f"{what} to listen at {path}")


# The throw-away roots Daemon made, by the pid that made them. A restart (Daemon(root=d.dir))
# takes its root over, so the last daemon's finish() removes it; whatever a test still holds
# when it exits, however it exits (a failed check included), goes then, in the process that
# made it (never in a forked child, whose exit would pull it from under the test).
_ROOTS = {}


@atexit.register
def _remove_roots():
    for path, pid in list(_ROOTS.items()):
        if pid == os.getpid():
            shutil.rmtree(path, ignore_errors=True)
            del _ROOTS[path]


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test (its parent) dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Stub:
    """A stub firecracker (or impostor): it binds and listens on api_sock, as the real one
    does, then says "ready" on a pipe. Unless wait=False, that has happened when this returns.
    user: run it as that account (an attacker's process); group, extra_groups: its gid and
    supplementary groups (Popen's meaning: None keeps the test's own); preexec: more set-up in
    the child."""

    def __init__(self, api_sock, exe=None, extra=(), wait=True, user=None, argv=None,
                 wrapper=(), group=None, extra_groups=None):
        self.exe = exe or STUB
        self.argv = argv or [self.exe, "--api-sock", api_sock, *extra]
        # Like a VM manager, make the socket's directory (root's, 0755) if it is not there.
        os.makedirs(os.path.dirname(api_sock), mode=0o755, exist_ok=True)
        ready_r, ready_w = os.pipe()
        env = dict(os.environ, STUB_READY_FD=str(ready_w))
        if wrapper:
            cmd, executable = [*wrapper, self.exe, *self.argv[1:]], None
        else:
            cmd, executable = self.argv, self.exe
        self.proc = subprocess.Popen(cmd, executable=executable, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=(ready_w,), env=env, user=user, group=group,
                                     extra_groups=extra_groups, preexec_fn=die_with_parent)
        os.close(ready_w)
        self.ready = os.fdopen(ready_r, "rb")
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=5.0):
        """Wait for the stub's "ready" (it listens, or has failed to and said why on stderr)."""
        # poll, not select: a benchmark holds thousands of stubs, past select's 1024 fds.
        p = select.poll()
        p.register(self.ready, select.POLLIN)
        line = self.ready.readline() if p.poll(timeout * 1000) else b""
        if line != b"ready\n":
            err = b""
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()
            fail(f"stub {self.pid} ({self.exe}) not ready within {timeout} s: {err!r}")
        self.ready.close()

    wait_exec = wait_ready

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


class Account:
    """A throw-away unprivileged account (a local attacker): a system user with its own group,
    no home and no login shell, created now and removed by remove() on every exit path.
    as_user() gives the keyword arguments that run a child as exactly that account (its uid,
    its gid, no supplementary groups: not the test's root group)."""

    def __init__(self, prefix="bgatk"):
        self.name = f"{prefix}{os.getpid()}"[:32]
        _useradd_locked(["useradd", "--system", "--no-create-home", "--shell",
                         "/usr/sbin/nologin", self.name])
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def as_user(self):
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def processes(self):
        """Pids whose real, effective or saved uid is the account's (as the host sees it)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                uids = status_of(entry).get("Uid", "").split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if str(self.uid) in uids[:3]:
                pids.append(int(entry))
        return pids

    def kill_processes(self, timeout=5.0):
        """SIGKILL whatever still runs as the account (each by a pidfd, so never a recycled
        pid) and wait for each to exit."""
        for pid in self.processes():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
            check(wait_pid_gone(pid, timeout), f"pid {pid} of {self.name} outlived SIGKILL")

    def remove(self):
        self.kill_processes()
        _useradd_locked(["userdel", self.name], ok_missing=True)


def _useradd_locked(cmd, timeout=30.0, ok_missing=False):
    """useradd/userdel, retried (bounded) while another test holds the passwd lock."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0 or (ok_missing and r.returncode == 6):  # 6: no such user
            return
        if "lock" not in r.stderr or time.monotonic() > deadline:
            fail(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        time.sleep(0.05)


class _Bangerd(subprocess.Popen):
    """bangerd's process; knows whether the test signalled it (terminate, kill, send_signal)."""

    signalled = False

    def send_signal(self, sig):
        self.signalled = True
        super().send_signal(sig)


# --- taps and loops: the kernel resources a test VM holds ---------------------------------

LOOP_FILE_BYTES = 1 << 20


def sh(*args, timeout=60):
    """Run a command (no stdin); its stdout, stripped. A non-zero exit or a hang fails the
    test, naming the command and what it said on stderr."""
    return run_ok(args, timeout=timeout, stdin=subprocess.DEVNULL,
                  capture_output=True).stdout.strip()


def link_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def loops_on(path):
    out = sh("losetup", "-j", path, "-O", "NAME", "-n")
    return [line.strip() for line in out.splitlines() if line.strip()]


def diskseq_of(dev):
    """The kernel's disk sequence number of /dev/loopN: a new one at every attach."""
    with open(f"/sys/block/{os.path.basename(dev)}/diskseq") as f:
        return int(f.read())


def ifindex_of(name):
    """The kernel's number of the network interface named name: a new one for every link."""
    with open(f"/sys/class/net/{name}/ifindex") as f:
        return int(f.read())


class Kernel:
    """Taps and loops made for one test; whatever survives is removed at the end.

    high_loops: loops get high device numbers (400 and up, per pid), for a case that lets one
    detach and then names it again: it must not find another test's loop there (losetup -f
    takes the lowest free)."""

    def __init__(self, tag, high_loops=False):
        self.tag = f"{tag}{os.getpid() % 10000}"
        self.high_loops = high_loops
        self.taps = []
        self.files = []

    def tap(self, suffix, prefix="bgt"):
        return self.add_tap(f"{prefix}{self.tag}{suffix}"[:15])

    def add_tap(self, name):
        sh("ip", "tuntap", "add", "dev", name, "mode", "tap")
        self.taps.append(name)
        return name

    def loop(self, path):
        """A loop device on a fresh 1 MiB file at path."""
        with open(path, "wb") as f:
            f.truncate(LOOP_FILE_BYTES)
        self.files.append(path)
        for n in range(400 + (os.getpid() % 100) * 4, 1000) if self.high_loops else ():
            r = subprocess.run(["losetup", f"/dev/loop{n}", path], capture_output=True)
            if r.returncode == 0:
                return f"/dev/loop{n}"
        return sh("losetup", "-f", "--show", path)

    def cleanup(self):
        for t in self.taps:
            subprocess.run(["ip", "link", "del", t], capture_output=True)
        for f in self.files:
            for dev in loops_on(f):
                subprocess.run(["losetup", "-d", dev], capture_output=True)


class Daemon:
    """bangerd with a throw-away state dir and socket, its stderr read line by line.

    Every test ends with finish(): bangerd must still run, started once, unless the test
    ended it itself (stop(), wait_exit(), a signal through proc); whichever way it ends, its
    log must hold no sanitizer report."""

    def __init__(self, extra=(), user=TEST_USER, preexec=None, config_text=None, root=None,
                 wait_ready=True, launcher=(), exe=None, helper=None):
        self.dir = root or tempfile.mkdtemp(prefix="banger-test-")
        self.own_dir = root is None or root in _ROOTS
        if self.own_dir:
            _ROOTS.setdefault(self.dir, os.getpid())
        self.ended = False
        os.chmod(self.dir, 0o755)
        self.api_root = os.path.join(self.dir, "vms")
        self.loop_root = os.path.join(self.dir, "images")
        self.run_dir = os.path.join(self.dir, "run")
        for d in (self.api_root, self.loop_root, self.run_dir):
            os.makedirs(d, exist_ok=True)
        # The daemon binds its socket after dropping to the test user.
        pw = pwd.getpwnam(user or TEST_USER)
        os.chown(self.run_dir, pw.pw_uid, pw.pw_gid)
        self.state = os.path.join(self.dir, "state")
        self.socket = os.path.join(self.run_dir, "bangerd.sock")
        # exe/helper: another build's pair (a benchmark's baseline); the suite's by default.
        args = [exe or BANGERD, "--state-dir", self.state, "--helper", helper or HELPER,
                "--listen", self.socket,
                "--tap-prefix", "bgt", "--dm-prefix", "bangertest-",
                "--dm-uuid-prefix", "BANGERT-",
                "--loop-root", self.loop_root, "--api-sock-root", self.api_root]
        if config_text is not None:
            conf = os.path.join(self.dir, "bangerd.conf")
            with open(conf, "w") as f:
                f.write(config_text)
            args += ["--config", conf]
        if user:
            args += ["--user", user]
        args += list(extra)
        # A launcher (systemd-socket-activate) passes the control socket; --listen is then unused.
        self.proc = _Bangerd([*launcher, *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=preexec)
        self.log = ""
        # Drain stderr all the time: a full pipe would block bangerd's next log line.
        self._log_cond = threading.Condition()
        self._log_eof = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if wait_ready:
            check(self.read_until("ready:"), f"bangerd never became ready:\n{self.log}")

    def _drain(self):
        fd = self.proc.stderr.fileno()
        while True:
            chunk = os.read(fd, 65536)
            with self._log_cond:
                if not chunk:
                    self._log_eof = True
                    self._log_cond.notify_all()
                    return
                self.log += chunk.decode(errors="replace")
                self._log_cond.notify_all()

    def read_until(self, needle, timeout=10.0):
        """Wait until the log holds needle or the bound passes; returns whether it does."""
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while needle not in self.log and not self._log_eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._log_cond.wait(left)
            return needle in self.log

    def helper_pid(self):
        children = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(children) as f:
            pids = [int(p) for p in f.read().split()]
        check(len(pids) == 1, f"bangerd has children {pids}, want the helper alone")
        return pids[0]

    def wait_exit(self, timeout=10.0):
        """Wait for bangerd to exit (the test ended it, or expects it to end); its exit
        status. Its log, read to the end, must hold no sanitizer report."""
        self.ended = True
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail(f"bangerd did not exit within {timeout} s; log:\n{self.log}")
        # Its last lines may still be in the pipe: let the reader take them (the helper,
        # which shares the pipe, exits on bangerd's EOF).
        self._reader.join(timeout=5)
        self.check_no_sanitizer_report()
        return rc

    def check_no_sanitizer_report(self):
        with self._log_cond:
            found = [r for r in SANITIZER_REPORTS if r in self.log]
        check(not found, f"bangerd's log (or its helper's) holds a sanitizer report {found}:\n"
              f"{self.log}")

    def stop(self):
        """SIGTERM and wait: the orderly shutdown."""
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.wait_exit()
        return rc

    def client(self):
        return Varlink(self.socket)

    def vm_dir(self, vm_id):
        return os.path.join(self.state, "vms", vm_id)

    def finish(self):
        """The end of the test. A bangerd the test did not end must still be the process
        started here, running, started once: it is stopped as systemd would (SIGTERM) and
        must exit 0. One the test ended is waited for. Either way, no sanitizer report; and
        whatever happens, no process and (when it is ours) no root is left behind."""
        try:
            if self.ended or self.proc.signalled:
                self.wait_exit()
                return
            rc = self.proc.poll()
            check(rc is None, f"bangerd died during the test (exit status {rc}); log:\n{self.log}")
            check(self.log.count(READY) <= 1, f"bangerd started more than once:\n{self.log}")
            self.proc.terminate()
            rc = self.wait_exit()
            check(rc == 0, f"bangerd exited {rc} on SIGTERM at the end of the test; log:\n"
                  f"{self.log}")
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                _ROOTS.pop(self.dir, None)


class VarlinkError(Exception):
    def __init__(self, error, parameters):
        super().__init__(f"{error} {parameters}")
        self.error = error
        self.parameters = parameters


class Varlink:
    """A minimal Varlink client: one call at a time, or raw bytes for protocol tests."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, method, parameters=None, fds=(), **flags):
        msg = {"method": method}
        if parameters is not None:
            msg["parameters"] = parameters
        msg.update(flags)
        data = json.dumps(msg).encode() + b"\0"
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        """The next reply object, or None when the server closed the connection."""
        while b"\0" not in self.buf:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, parameters=None, fds=()):
        self.send(method, parameters, fds)
        reply = self.receive()
        check(reply is not None, f"{method}: connection closed without a reply")
        if "error" in reply:
            raise VarlinkError(reply["error"], reply.get("parameters", {}))
        return reply.get("parameters", {})

    def expect_error(self, method, parameters, error):
        try:
            reply = self.call(method, parameters)
        except VarlinkError as e:
            check(e.error == error, f"{method}({parameters}): {e.error}, want {error}")
            return e.parameters
        fail(f"{method}({parameters}) answered {reply}, want {error}")

    def watch(self):
        """Start a Watch stream; returns once the daemon confirms the subscription."""
        self.send(IFACE + "Watch", {}, more=True)
        first = self.receive()
        check(first and first["parameters"]["event"]["kind"] == "subscribed",
              f"Watch did not confirm: {first}")
        return self

    def next_event(self):
        reply = self.receive()
        check(reply is not None and reply.get("continues") is True, f"Watch stream: {reply}")
        return reply["parameters"]["event"]

    def close(self):
        self.sock.close()


IFACE = "io.banger.Handles."


def run_cases(cases):
    if len(sys.argv) < 2 or sys.argv[1] not in cases:
        fail(f"usage: {sys.argv[0]} {{{','.join(cases)}}}")
    cases[sys.argv[1]]()
