#!/usr/bin/env python3
"""bangerd start-up as DESIGN section 1 orders it, against the real binaries.

Started as root with --user naming an unprivileged user, bangerd must end up
as that user with no capabilities and no_new_privs, and its helper as root
with exactly four capabilities and no stray fds. Each of the two must notice
the other's death. One case per run (argv[1]) so that meson counts each.
Waits are for events (a log line, a pidfd), each bounded; never a bare sleep.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

sys_path_dir = os.path.dirname(os.path.abspath(__file__))
import sys  # noqa: E402

sys.path.insert(0, sys_path_dir)
from bangertest import (HELPER, IFACE, Daemon, TEST_USER, Varlink, check,  # noqa: E402
                        die_with_parent, require_root, run_cases, skip, status_of, wait_listening,
                        wait_pid_gone)

# CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21)
HELPER_CAPS = (1 << 2) | (1 << 12) | (1 << 19) | (1 << 21)


def case_privileges():
    require_root()
    user = pwd.getpwnam(TEST_USER)
    d = Daemon(extra=["--audit-log", "/dev/null"], wait_ready=False)
    try:
        check(d.read_until("ready:"), f"bangerd never became ready:\n{d.log}")
        st = status_of(d.proc.pid)
        check(st["Uid"].split() == [str(user.pw_uid)] * 4, f"bangerd Uid {st['Uid']}")
        check(st["Gid"].split() == [str(user.pw_gid)] * 4, f"bangerd Gid {st['Gid']}")
        check(st["Groups"] == "", f"bangerd supplementary groups {st['Groups']!r}")
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            check(int(st[cap], 16) == 0, f"bangerd {cap} = {st[cap]}")
        check(st["NoNewPrivs"] == "1", "bangerd NoNewPrivs")

        hp = d.helper_pid()
        hs = status_of(hp)
        check(hs["Uid"].split() == ["0"] * 4, f"helper Uid {hs['Uid']}")
        check(int(hs["CapEff"], 16) == HELPER_CAPS, f"helper CapEff {hs['CapEff']}")
        check(int(hs["CapPrm"], 16) == HELPER_CAPS, f"helper CapPrm {hs['CapPrm']}")
        check(int(hs["CapBnd"], 16) == HELPER_CAPS, f"helper CapBnd {hs['CapBnd']}")
        check(int(hs["CapInh"], 16) == 0 and int(hs["CapAmb"], 16) == 0, "helper inh/amb")
        check(hs["NoNewPrivs"] == "1", "helper NoNewPrivs")

        # fds: 0 /dev/null, 1 and 2 inherited, 3 the socket; 4 the audit log it opened itself;
        # 5 its own network namespace, to come back to after asking another one about sockets.
        fds = {int(n): os.readlink(f"/proc/{hp}/fd/{n}") for n in os.listdir(f"/proc/{hp}/fd")}
        check(sorted(fds) == [0, 1, 2, 3, 4, 5], f"helper fds {fds}")
        check(fds[5] == os.readlink("/proc/self/ns/net"), f"helper fd 5 (netns) {fds[5]}")
        check(fds[0] == "/dev/null", f"helper stdin {fds[0]}")
        check(fds[3].startswith("socket:"), f"helper fd 3 {fds[3]}")
        check(fds[4] == "/dev/null", f"helper fd 4 (audit log) {fds[4]}")
        st_mode = os.stat(d.state)
        check(st_mode.st_uid == user.pw_uid and (st_mode.st_mode & 0o777) == 0o700,
              "state dir owned by the daemon user, 0700")
        print(f"bangerd uid {user.pw_uid} no caps; helper pid {hp} caps {hs['CapEff']} fds {fds}")
    finally:
        d.finish()


def case_kill_bangerd():
    require_root()
    d = Daemon(wait_ready=False)
    try:
        check(d.read_until("ready:"), f"not ready:\n{d.log}")
        hp = d.helper_pid()
        start = time.monotonic()
        d.proc.kill()  # through Daemon's process: finish() then knows the test ended it
        check(wait_pid_gone(hp, 1.0), "helper still alive 1 s after bangerd was killed")
        print(f"helper gone {1000 * (time.monotonic() - start):.1f} ms after kill -9 bangerd")
    finally:
        d.finish()


def case_kill_helper():
    require_root()
    d = Daemon(wait_ready=False)
    try:
        check(d.read_until("ready:"), f"not ready:\n{d.log}")
        hp = d.helper_pid()
        os.kill(hp, signal.SIGKILL)
        rc = d.wait_exit()
        d.read_until("exiting with status", timeout=2)
        check(rc != 0, f"bangerd exited {rc} after its helper was killed")
        check("banger-privhelper is gone" in d.log and "killed by signal 9" in d.log,
              f"no clear log line:\n{d.log}")
        print(f"bangerd exit status {rc}; log:\n{d.log}")
    finally:
        d.finish()


def case_sigterm():
    require_root()
    d = Daemon(wait_ready=False)
    try:
        check(d.read_until("ready:"), f"not ready:\n{d.log}")
        hp = d.helper_pid()
        d.proc.send_signal(signal.SIGTERM)
        check(d.wait_exit() == 0, "SIGTERM exit status")
        check(wait_pid_gone(hp, 2.0), "helper outlived bangerd's orderly exit")
    finally:
        d.finish()


def case_unprivileged_start():
    """Started by a non-root user: no drop, helper without capabilities, same code paths."""
    require_root()
    user = pwd.getpwnam(TEST_USER)

    def become_user():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    # The user must be able to create its state dir before it starts.
    root = tempfile.mkdtemp(prefix="banger-test-unpriv-")
    os.makedirs(os.path.join(root, "state"))
    os.chown(os.path.join(root, "state"), user.pw_uid, user.pw_gid)
    d = Daemon(user=None, preexec=become_user, wait_ready=False, root=root)
    try:
        check(d.read_until("ready:"), f"not ready:\n{d.log}")
        check("not started as root" in d.log, f"helper did not warn:\n{d.log}")
        check("unprivileged" in d.log, f"bangerd did not say the helper is unprivileged:\n{d.log}")
        hs = status_of(d.helper_pid())
        check(hs["Uid"].split() == [str(user.pw_uid)] * 4, "helper stays the user")
        check(int(hs["CapEff"], 16) == 0 and hs["NoNewPrivs"] == "1", "helper has nothing")
    finally:
        d.finish()
        shutil.rmtree(root, ignore_errors=True)


def case_config_errors():
    require_root()
    bad = [
        ("state_dir = /tmp\nbogus_key = 1\n", ":2: unknown key 'bogus_key'"),
        ("tap_prefix = \n", ":1: bad value for tap_prefix"),
        ("loop_root = relative/dir\n", ":1: bad value for loop_root"),
        ("this line has no equals sign\n", ":1: expected 'key = value'"),
    ]
    for text, needle in bad:
        d = Daemon(config_text=text, wait_ready=False)
        try:
            rc = d.wait_exit()
            check(rc == 2, f"config {text!r}: exit {rc}, want 2")
            check(needle in d.log, f"config {text!r}: log lacks {needle!r}:\n{d.log}")
            check(not os.path.exists(d.state), "refused config must not create the state dir")
        finally:
            d.finish()
    d = Daemon(user="root", wait_ready=False)
    try:
        check(d.wait_exit() == 2, "--user root must be refused")
    finally:
        d.finish()


def case_socket_activation():
    """Started as systemd does: the control socket passed in (LISTEN_FDS), READY=1 on NOTIFY_SOCKET."""
    require_root()
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        skip("systemd-socket-activate (Debian's systemd package) is not installed")
    tmp = tempfile.mkdtemp(prefix="banger-test-activation-")
    os.chmod(tmp, 0o755)
    notify_path = os.path.join(tmp, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o666)  # bangerd notifies after dropping to the test user
    control = os.path.join(tmp, "control.sock")
    d = Daemon(wait_ready=False, launcher=[activate, "-l", control,
                                           "-E", f"NOTIFY_SOCKET={notify_path}"])
    try:
        wait_listening(control, 5, "systemd-socket-activate")
        # The first connection starts bangerd, which then serves it on the inherited socket.
        client = Varlink(control, timeout=15)
        status = client.call(IFACE + "GetStatus")
        check(status["helper_pid"] > 0, f"GetStatus over the activated socket: {status}")
        check(d.read_until("control socket from systemd"), f"not socket-activated:\n{d.log}")
        notify.settimeout(10)
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        check(any("STATUS=" in m for m in messages), f"notifications {messages}")
        d.proc.terminate()
        while not any("STOPPING=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        client.close()
        print(f"notifications: {messages}")
    finally:
        d.finish()
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


def case_split_mode():
    """Both halves started the way systemd starts them: each from its own socket unit."""
    require_root()
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        skip("systemd-socket-activate (Debian's systemd package) is not installed")
    tmp = tempfile.mkdtemp(prefix="banger-test-split-")
    os.chmod(tmp, 0o755)
    helper_sock = os.path.join(tmp, "privhelper.sock")
    notify_path = os.path.join(tmp, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o666)
    control = os.path.join(tmp, "control.sock")
    d = None
    # banger-privhelper.socket: Accept=yes, one helper per connection, fd 3 = the connection.
    helper_unit = subprocess.Popen(
        [activate, "--seqpacket", "--accept", "-l", helper_sock, HELPER,
         "--tap-prefix", "bgt", "--dm-prefix", "bangertest-", "--dm-uuid-prefix", "BANGERT-",
         "--loop-root", os.path.join(tmp, "images"), "--api-sock-root", os.path.join(tmp, "vms"),
         "--daemon-user", TEST_USER],
        preexec_fn=die_with_parent,  # gone with the test, however the test ends
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(helper_sock, 5, "the helper socket")
        os.chmod(helper_sock, 0o666)  # the unit's SocketGroup=banger, here: anyone may try
        # A connection from the wrong uid (root, not the daemon user) is refused and audited.
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        intruder.connect(helper_sock)
        intruder.settimeout(10)
        check(intruder.recv(4096) == b"", "the helper talked to a wrong uid")
        intruder.close()
        # The same roots as the helper's policy: bangerd checks the echo in HELLO.
        d = Daemon(wait_ready=False, root=tmp, extra=["--helper-socket", helper_sock],
                   launcher=[activate, "-l", control, "-E", f"NOTIFY_SOCKET={notify_path}"])
        wait_listening(control, 5, "the control socket")
        client = Varlink(control, timeout=15)
        status = client.call(IFACE + "GetStatus")
        check(status["helper_privileged"] is True, f"the split helper is privileged: {status}")
        notify.settimeout(10)
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        client.close()
        d.proc.terminate()
        check(d.wait_exit() == 0, "clean exit")
        helper_unit.terminate()
        helper_log = helper_unit.communicate(timeout=10)[1].decode(errors="replace")
        check("op=violation" in helper_log and "is not the daemon user" in helper_log,
              f"no audit line for the refused peer:\n{helper_log}")
        check("op=hello" in helper_log and 'call=startup' in helper_log,
              f"bangerd's own connection was served:\n{helper_log}")
        print(f"split mode: READY via {messages}; wrong uid refused")
    finally:
        if d:
            d.finish()
        if helper_unit.poll() is None:
            helper_unit.kill()
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


CASES = {
    "split-mode": case_split_mode,
    "socket-activation": case_socket_activation,
    "privileges": case_privileges,
    "kill-bangerd": case_kill_bangerd,
    "kill-helper": case_kill_helper,
    "sigterm": case_sigterm,
    "unprivileged-start": case_unprivileged_start,
    "config-errors": case_config_errors,
}

if __name__ == "__main__":
    run_cases(CASES)
