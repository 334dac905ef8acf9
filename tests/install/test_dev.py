#!/usr/bin/env python3
"""`./dev prepare-run`: the directories `./dev run` keeps its state in.

Root makes them and hands one to the daemon user, so a directory that someone
else made or can still change would let that someone steer root's mkdir,
chown and chmod (a `run -> /victim` symlink in a DEV_ROOT a local user made
first in /var/tmp got the victim chowned to the daemon user). Each case runs
the real script as root against a scratch BANGER_DEV_ROOT, never the real
one, with a throw-away account as BANGER_DEV_USER and, where one is needed,
another as the local attacker:

  fresh     absent, it is made: root's 0755, with vms/ and images/ root's
            0755 and run/ the daemon user's 0750; a second run accepts it
  planted   made first by the attacker in a sticky, world-writable dir
            (like /var/tmp) with run -> a victim dir: refused with a message
            that names it, and the victim keeps its owner and mode
  unsafe    each other way the path can be untrustworthy, one at a time:
            refused, with a message that says why

One case per run (argv[1]) so that meson counts each.
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import Account, check, fail, skip  # noqa: E402

DEV = os.environ.get("BANGER_DEV_SCRIPT", "")


def prepare(dev_root, daemon):
    """./dev prepare-run with a scratch DEV_ROOT: (exit status, what it wrote)."""
    env = dict(os.environ, BANGER_DEV_ROOT=dev_root, BANGER_DEV_USER=daemon.name)
    r = subprocess.run([DEV, "prepare-run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=env, timeout=60)
    return r.returncode, r.stdout


def owner_mode(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode)


def as_account(account, *argv):
    """Run argv as account (its uid and gid, no supplementary groups)."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, cwd="/",
                       **account.as_user())
    check(r.returncode == 0, f"{' '.join(argv)} as {account.name}: {r.stderr}")


def expect_refused(dev_root, daemon, why, names):
    """prepare-run exits non-zero, names the path it refuses and says why."""
    rc, out = prepare(dev_root, daemon)
    check(rc != 0, f"prepare-run accepted {dev_root} ({why}):\n{out}")
    check("dev: refusing" in out and names in out,
          f"prepare-run refused {dev_root} ({why}) without naming {names}:\n{out}")
    print(f"refused ({why}): {out.splitlines()[0]}")
    return out


class Scratch:
    """A root-owned scratch dir (0755) with a sticky world-writable dir in it, like /var/tmp."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="banger-test-dev-")
        os.chmod(self.dir, 0o755)
        self.vartmp = os.path.join(self.dir, "vartmp")
        os.mkdir(self.vartmp)
        os.chmod(self.vartmp, 0o1777)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def setup():
    if os.geteuid() != 0:
        skip("needs root: ./dev prepare-run makes root's directories and chowns one")
    if not DEV or not os.access(DEV, os.X_OK):
        fail(f"BANGER_DEV_SCRIPT={DEV!r} is not the dev script (run through meson test)")
    if not shutil.which("useradd"):
        skip("useradd is not installed (Debian package passwd)")


def case_fresh():
    setup()
    scratch, daemon = Scratch(), Account("bgdev")
    try:
        dev_root = os.path.join(scratch.vartmp, "banger-dev")
        want = {"": (0, 0, 0o755), "vms": (0, 0, 0o755), "images": (0, 0, 0o755),
                "run": (daemon.uid, daemon.gid, 0o750)}
        for attempt in ("absent", "already made"):
            rc, out = prepare(dev_root, daemon)
            check(rc == 0, f"prepare-run on a {attempt} DEV_ROOT: exit {rc}:\n{out}")
            for name, (uid, gid, mode) in want.items():
                path = os.path.join(dev_root, name)
                got = owner_mode(path)
                check(got == (uid, gid, mode, stat.S_IFDIR),
                      f"{attempt}: {path} is {got[0]}:{got[1]} {got[2]:04o}, want a directory "
                      f"{uid}:{gid} {mode:04o}")
            check(sorted(os.listdir(dev_root)) == sorted(n for n in want if n),
                  f"{attempt}: {dev_root} holds {os.listdir(dev_root)}")
            print(f"{attempt}: ok, {dev_root} root 0755, vms/ images/ root 0755, run/ "
                  f"{daemon.name} 0750")
        # bangerd then makes state/ its own: a second run accepts that too.
        state = os.path.join(dev_root, "state")
        os.mkdir(state, 0o700)
        os.chown(state, daemon.uid, daemon.gid)
        rc, out = prepare(dev_root, daemon)
        check(rc == 0, f"prepare-run with bangerd's state/: exit {rc}:\n{out}")
        print("with bangerd's state/ (its user's, 0700): ok")
    finally:
        daemon.remove()
        scratch.cleanup()


def case_planted():
    setup()
    scratch, daemon, attacker = Scratch(), Account("bgdev"), Account("bgatk")
    try:
        victim = os.path.join(scratch.dir, "victim")
        os.mkdir(victim, 0o755)
        with open(os.path.join(victim, "file"), "w") as f:
            f.write("the victim's\n")
        before = owner_mode(victim)
        dev_root = os.path.join(scratch.vartmp, "banger-dev")
        as_account(attacker, "mkdir", "-m", "0755", dev_root)
        as_account(attacker, "ln", "-s", victim, os.path.join(dev_root, "run"))
        planted = sorted(os.listdir(dev_root))

        out = expect_refused(dev_root, daemon, "made by another user", dev_root)
        check(attacker.name in out, f"the message does not name the owner {attacker.name}:\n{out}")
        after = owner_mode(victim)
        check(after == before, f"the victim {victim} changed: {before} -> {after}")
        check(owner_mode(os.path.join(victim, "file"))[0] == 0, "the victim's file changed owner")
        check(sorted(os.listdir(dev_root)) == planted,
              f"prepare-run made something in the planted dir: {os.listdir(dev_root)}")
        check(owner_mode(dev_root)[0] == attacker.uid, "the planted dir changed owner")
        print(f"victim {victim} still {after[0]}:{after[1]} {after[2]:04o}; nothing made in "
              f"{dev_root}")
    finally:
        attacker.remove()
        daemon.remove()
        scratch.cleanup()


def case_unsafe():
    setup()
    scratch, daemon, attacker = Scratch(), Account("bgdev"), Account("bgatk")
    try:
        victim = os.path.join(scratch.dir, "victim")
        os.mkdir(victim, 0o755)
        before = owner_mode(victim)
        n = 0

        def fresh_root():
            """A DEV_ROOT that prepare-run accepts, made by it, to spoil one way at a time."""
            nonlocal n
            n += 1
            path = os.path.join(scratch.vartmp, f"banger-dev-{n}")
            rc, out = prepare(path, daemon)
            check(rc == 0, f"prepare-run on an absent {path}: exit {rc}:\n{out}")
            return path

        root = fresh_root()
        os.chmod(root, 0o777)
        expect_refused(root, daemon, "DEV_ROOT world-writable", "mode 777")

        root = fresh_root()
        os.chmod(root, 0o775)
        expect_refused(root, daemon, "DEV_ROOT group-writable", "mode 775")

        root = fresh_root()
        link = root + "-link"
        os.symlink(root, link)
        expect_refused(link, daemon, "DEV_ROOT a symlink", "a symlink")

        root = fresh_root()
        expect_refused(os.path.join(scratch.vartmp, "..", "vartmp", os.path.basename(root)),
                       daemon, "'..' on the way", "'..'")
        expect_refused("relative/banger-dev", daemon, "a relative path", "not an absolute path")

        for name in ("run", "vms", "images", "state"):
            root = fresh_root()
            path = os.path.join(root, name)
            if os.path.isdir(path):
                os.rmdir(path)
            os.symlink(victim, path)
            expect_refused(root, daemon, f"{name}/ a symlink to the victim",
                           f"{path} is a symbolic link")

        for name in ("vms", "images"):
            root = fresh_root()
            os.chown(os.path.join(root, name), attacker.uid, attacker.gid)
            expect_refused(root, daemon, f"{name}/ the attacker's",
                           f"{os.path.join(root, name)} is owned by {attacker.name}")
            root = fresh_root()
            os.chmod(os.path.join(root, name), 0o777)
            expect_refused(root, daemon, f"{name}/ world-writable", "mode 777")

        root = fresh_root()
        os.chown(os.path.join(root, "run"), attacker.uid, attacker.gid)
        expect_refused(root, daemon, "run/ the attacker's",
                       f"{os.path.join(root, 'run')} is owned by {attacker.name}")

        root = fresh_root()
        os.mkdir(os.path.join(root, "state"))
        os.chown(os.path.join(root, "state"), attacker.uid, attacker.gid)
        expect_refused(root, daemon, "state/ the attacker's", f"is owned by {attacker.name}")

        # Ancestors: one of the attacker's, and one that others may write in (not sticky).
        theirs = os.path.join(scratch.vartmp, "theirs")
        as_account(attacker, "mkdir", "-m", "0755", theirs)
        expect_refused(os.path.join(theirs, "banger-dev"), daemon, "an ancestor the attacker's",
                       f"{theirs} is owned by {attacker.name}")
        open_dir = os.path.join(scratch.dir, "open")
        os.mkdir(open_dir)
        os.chmod(open_dir, 0o777)
        expect_refused(os.path.join(open_dir, "banger-dev"), daemon,
                       "an ancestor world-writable, not sticky", "mode 777")
        check(not os.path.lexists(os.path.join(open_dir, "banger-dev")),
              "prepare-run made DEV_ROOT below a world-writable, non-sticky dir")
        # An ancestor that is a symlink (the attacker's, in a sticky dir: they may re-point it).
        as_account(attacker, "ln", "-s", scratch.dir, os.path.join(scratch.vartmp, "via"))
        expect_refused(os.path.join(scratch.vartmp, "via", "banger-dev"), daemon,
                       "a symlink on the way", "a symlink")

        after = owner_mode(victim)
        check(after == before, f"the victim {victim} changed: {before} -> {after}")
        print(f"victim {victim} unchanged through all {n} spoilt roots")
    finally:
        attacker.remove()
        daemon.remove()
        scratch.cleanup()


CASES = {"fresh": case_fresh, "planted": case_planted, "unsafe": case_unsafe}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        fail(f"usage: {sys.argv[0]} {'|'.join(CASES)}")
    CASES[sys.argv[1]]()
