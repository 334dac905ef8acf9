#!/usr/bin/env python3
"""What `meson install` puts on a host, checked where it lands.

Each case installs the current build into its own throw-away DESTDIR
(`meson install --destdir`, serialised by a lock, never a rebuild) and checks
the installed files, not the sources: every path and its mode, the units
under `systemd-analyze verify` and `systemd-analyze security --offline`, the
man pages under man(1), the sysusers.d and tmpfiles.d files applied to a
scratch root, the agreement between the units and the example config,
split mode started from the installed units' own ExecStart= lines, and who
may connect to the helper socket as its .socket unit sets it up.

One case per run (argv[1]) so that meson counts each. A tool this machine
lacks makes its case exit 77 and say which. The layout (prefix and install
dirs) comes from meson in BANGER_INSTALL_* variables.
"""
import errno
import fcntl
import grp
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

# Throw-away accounts (a reader, a stand-in daemon user) come from the integration tests'
# support, which retries the passwd lock that other tests hold at the same time.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import (SKIP, Account, _useradd_locked, check, fail, sh, skip,  # noqa: E402
                        wait_listening, wait_until)

BUILD_ROOT = os.environ.get("BANGER_BUILD_ROOT", "")
TEST_USER = os.environ.get("BANGER_TEST_USER", "nobody")


def layout(name):
    value = os.environ.get("BANGER_INSTALL_" + name.upper())
    if value is None:
        fail(f"BANGER_INSTALL_{name.upper()} is not set (run through meson test)")
    return value


def need_tool(name, package):
    path = shutil.which(name)
    if not path:
        skip(f"{name} is not installed (Debian package {package})")
    return path


# --- the install ------------------------------------------------------------------------


class Install:
    """A DESTDIR install of the current build; paths inside it by their installed name."""

    def __init__(self):
        if not BUILD_ROOT:
            fail("BANGER_BUILD_ROOT is not set (run through meson test)")
        self.root = tempfile.mkdtemp(prefix="banger-test-install-")
        os.chmod(self.root, 0o755)  # the daemon user must reach the installed binaries
        # meson install writes its log in the build dir: one install at a time.
        lock_path = os.path.join(BUILD_ROOT, "meson-private", "banger-install-test.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = subprocess.run(["meson", "install", "-C", BUILD_ROOT, "--no-rebuild", "--quiet",
                                "--destdir", self.root],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            fail(f"meson install --destdir failed ({r.returncode}):\n{r.stdout}")

    def path(self, installed):
        """Where the file installed as `installed` (absolute) lies in the DESTDIR."""
        return os.path.join(self.root, installed.lstrip("/"))

    def unit(self, name):
        return self.path(os.path.join(layout("unitdir"), name))

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def expected_files():
    """Every file the install must put down, by installed path, with the mode it must have."""
    p = layout("prefix")
    files = {
        os.path.join(p, layout("sbindir"), "bangerd"): 0o755,
        os.path.join(p, layout("bindir"), "bangerctl"): 0o755,
        os.path.join(p, layout("libexecdir"), "banger-privhelper"): 0o755,
        os.path.join(layout("sysusersdir"), "banger.conf"): 0o644,
        os.path.join(layout("tmpfilesdir"), "banger.conf"): 0o644,
        os.path.join(layout("docdir"), "bangerd.conf.example"): 0o644,
        os.path.join(layout("completiondir"), "bangerctl"): 0o644,
        os.path.join(layout("catalogdir"), "banger.catalog"): 0o644,
    }
    for unit in ("bangerd.socket", "bangerd.service", "banger-privhelper.socket",
                 "banger-privhelper@.service", "banger-metrics.service", "banger-metrics.timer"):
        files[os.path.join(layout("unitdir"), unit)] = 0o644
    for page in man_pages():
        files[os.path.join(p, page)] = 0o644
    return files


def man_pages():
    """Installed man pages relative to the prefix; empty when the build had no scdoc."""
    return [m for m in layout("man_pages").split(":") if m]


# --- unit files -------------------------------------------------------------------------


def read_unit(path):
    """{section: {key: [values in order]}}, with continuation lines joined as systemd does."""
    sections, section, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip()[0] in "#;"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = sections.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit, section, key):
    values = unit.get(section, {}).get(key, [])
    check(len(values) == 1, f"[{section}] {key}= should appear once, found {values}")
    return values[0]


def exec_start(unit):
    return shlex.split(unit_value(unit, "Service", "ExecStart"))


def flag_values(argv, flag):
    """Every value of --flag VALUE or --flag=VALUE in argv."""
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
    return values


POLICY_FLAGS = ("tap-prefix", "dm-prefix", "dm-uuid-prefix", "loop-root", "api-sock-root",
                "firecracker-name")


def read_config(path):
    """bangerd.conf's live settings: {key: [values]} (comment lines skipped)."""
    config = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            check(sep, f"{path}: not 'key = value': {line!r}")
            config.setdefault(key.strip(), []).append(value.strip())
    return config


# --- cases ------------------------------------------------------------------------------


def case_destdir():
    """Every expected path is installed, with its mode; nothing else is."""
    inst = Install()
    try:
        want = expected_files()
        for installed, mode in sorted(want.items()):
            path = inst.path(installed)
            check(os.path.isfile(path) and not os.path.islink(path),
                  f"{installed} is not installed")
            st = os.stat(path)
            check(stat.S_IMODE(st.st_mode) == mode,
                  f"{installed} has mode {stat.S_IMODE(st.st_mode):o}, want {mode:o}")
            check(st.st_size > 0, f"{installed} is empty")
            print(f"ok {mode:o} {installed}")
        got = set()
        for dirpath, _, names in os.walk(inst.root):
            for n in names:
                got.add("/" + os.path.relpath(os.path.join(dirpath, n), inst.root))
        extra = sorted(got - set(want))
        check(not extra, f"installed but not expected: {extra}")
        if not man_pages():
            print("note: built without scdoc, so no man pages were expected")
        # The installed programs run and are the ones the units name.
        p = layout("prefix")
        for prog, args in ((os.path.join(p, layout("sbindir"), "bangerd"), ["--version"]),
                           (os.path.join(p, layout("bindir"), "bangerctl"), ["--version"]),
                           (os.path.join(p, layout("libexecdir"), "banger-privhelper"),
                            ["--help"])):
            r = subprocess.run([inst.path(prog)] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=10)
            check(r.returncode == 0, f"{prog} {' '.join(args)} exited {r.returncode}: {r.stdout}")
        units = {u: read_unit(inst.unit(u))
                 for u in ("bangerd.service", "banger-privhelper@.service")}
        check(exec_start(units["bangerd.service"])[0] ==
              os.path.join(p, layout("sbindir"), "bangerd"),
              "bangerd.service does not start the installed bangerd")
        check(exec_start(units["banger-privhelper@.service"])[0] ==
              os.path.join(p, layout("libexecdir"), "banger-privhelper"),
              "banger-privhelper@.service does not start the installed helper")
        print(f"{len(want)} files installed as expected under {layout('prefix')}")
    finally:
        inst.cleanup()


def units_for_verify(inst, workdir):
    """
    The installed units, with ExecStart='s binary moved into the DESTDIR: verify
    checks that the program exists and is executable, and here it lies there.
    Nothing else is changed.
    """
    prefix = layout("prefix")
    paths = []
    for name in sorted(os.listdir(inst.path(layout("unitdir")))):
        with open(inst.unit(name)) as f:
            text = f.read()
        text = re.sub(r"^ExecStart=" + re.escape(prefix) + "/",
                      "ExecStart=" + inst.path(prefix) + "/", text, flags=re.M)
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths


def case_verify():
    """systemd-analyze verify finds nothing to say about the installed units."""
    analyze = need_tool("systemd-analyze", "systemd")
    inst = Install()
    work = tempfile.mkdtemp(prefix="banger-test-verify-")
    try:
        units = units_for_verify(inst, work)
        check(len(units) == 6, f"expected 6 units, found {units}")
        env = dict(os.environ)
        # Documentation=man:... is checked with man(1): against the installed pages.
        man_args = ["--man=yes"] if man_pages() and shutil.which("man") else ["--man=no"]
        if man_args == ["--man=no"]:
            print("note: no man pages built or no man(1): Documentation= not checked")
        env["MANPATH"] = inst.path(os.path.join(layout("prefix"), "share", "man"))
        r = subprocess.run([analyze, "verify", "--no-pager"] + man_args + units,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           cwd=work, timeout=60)
        # verify exits 0 on warnings such as an unknown key: any output at all fails.
        check(r.returncode == 0 and not r.stdout.strip(),
              f"systemd-analyze verify (exit {r.returncode}):\n{r.stdout}")
        print(f"systemd-analyze verify {' '.join(man_args)}: clean for "
              f"{', '.join(os.path.basename(u) for u in units)}")
    finally:
        inst.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def exposure(analyze, unit_path):
    r = subprocess.run([analyze, "security", "--offline=true", "--no-pager", unit_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+)\.(\d)", r.stdout)
    check(m, f"no overall exposure level in systemd-analyze output:\n{r.stdout}")
    return int(m.group(1)) * 10 + int(m.group(2)), r.stdout


def security_case(unit, max_tenths):
    """systemd-analyze's exposure score (in tenths, as it computes it) is within the limit."""
    analyze = need_tool("systemd-analyze", "systemd")
    inst = Install()
    try:
        path = inst.unit(unit)
        score, out = exposure(analyze, path)
        exposed = [l for l in out.splitlines() if l.startswith("✗")]
        print(f"$ systemd-analyze security --offline=true {os.path.join(layout('unitdir'), unit)}")
        print("\n".join(exposed))
        print(f"{unit}: exposure {score / 10:.1f} (limit {max_tenths / 10:.1f})")
        check(score <= max_tenths,
              f"{unit}: exposure {score / 10:.1f} is over {max_tenths / 10:.1f}:\n{out}")
    finally:
        inst.cleanup()


def case_security_bangerd():
    security_case("bangerd.service", 5)


def case_security_helper():
    security_case("banger-privhelper@.service", 26)


def case_security_metrics():
    security_case("banger-metrics.service", 5)


def case_man_pages():
    """Each page renders with man -l without a warning and has the sections it must have."""
    if not man_pages():
        skip("scdoc was not found when the build was configured: no man pages built")
    man = need_tool("man", "man-db")
    inst = Install()
    try:
        need = ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO")
        rendered = {}
        for page in man_pages():
            path = inst.path(os.path.join(layout("prefix"), page))
            env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
            env.pop("MAN_KEEP_FORMATTING", None)
            r = subprocess.run([man, "--warnings", "-l", path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, timeout=60)
            check(r.returncode == 0, f"man -l {page} exited {r.returncode}: {r.stderr}")
            check(not r.stderr.strip(), f"man -l {page} warned:\n{r.stderr}")
            text = r.stdout
            headings = set(re.findall(r"^([A-Z][A-Z ]+)$", text, flags=re.M))
            section = page.rsplit(".", 1)[1]
            wanted = need + (("OPTIONS", "EXIT STATUS") if section in ("1", "8") else ())
            missing = [h for h in wanted if h not in headings]
            check(not missing, f"{page} lacks {missing} (has {sorted(headings)})")
            check(not re.search(r"@[a-z_]+@", text), f"{page} has an unsubstituted @var@")
            rendered[page.rsplit("/", 1)[1]] = text
            print(f"ok {page}: {len(text.splitlines())} lines, sections {sorted(headings)}")
        # Every bangerd option is documented in bangerd(8), every config key in bangerd.conf(5).
        bangerd = inst.path(os.path.join(layout("prefix"), layout("sbindir"), "bangerd"))
        usage = subprocess.run([bangerd, "--help"], stdout=subprocess.PIPE, text=True,
                               timeout=10).stdout
        flags = re.findall(r"^\s+(--[a-z-]+)", usage, flags=re.M)
        check(len(flags) > 10, f"could not read bangerd's options from --help:\n{usage}")
        for name, items in (("bangerd.8", flags),
                            ("bangerd.conf.5", [f[2:].replace("-", "_") for f in flags
                                                if f not in ("--config", "--help", "--version")])):
            # Hyphenation may split a word at a line end: join those back first.
            text = re.sub(r"\u2010\n\s*|-\n\s*", "", rendered[name])
            missing = [i for i in items if not mentions(text, i)]
            check(not missing, f"{name} does not document {missing}")
            print(f"ok {name} documents {len(items)} options/keys")
        helper = inst.path(os.path.join(layout("prefix"), layout("libexecdir"),
                                        "banger-privhelper"))
        usage = subprocess.run([helper, "--help"], stdout=subprocess.PIPE, text=True,
                               timeout=10).stdout
        hflags = sorted(set(re.findall(r"(--[a-z-]+)", usage)))
        text = re.sub(r"\u2010\n\s*|-\n\s*", "", rendered["banger-privhelper.8"])
        missing = [f for f in hflags if not mentions(text, f)]
        check(not missing, f"banger-privhelper.8 does not document {missing}")
        for field in ("req", "caller_uid", "caller_gid", "caller_pid", "call", "vm", "op", "args",
                      "result", "reason", "errno", "dur_us"):
            check(re.search(r"\b" + field + r"\b", text),
                  f"banger-privhelper.8: no audit field {field}")
        print(f"ok banger-privhelper.8 documents {hflags} and the audit fields")
    finally:
        inst.cleanup()


def case_example_config():
    """The installed example documents every key bangerd knows, and bangerd accepts it."""
    inst = Install()
    tmp = tempfile.mkdtemp(prefix="banger-test-conf-")
    try:
        os.chmod(tmp, 0o755)
        example = inst.path(os.path.join(layout("docdir"), "bangerd.conf.example"))
        bangerd = inst.path(os.path.join(layout("prefix"), layout("sbindir"), "bangerd"))
        usage = subprocess.run([bangerd, "--help"], stdout=subprocess.PIPE, text=True,
                               timeout=10).stdout
        keys = [f[2:].replace("-", "_") for f in re.findall(r"^\s+(--[a-z-]+)", usage, flags=re.M)
                if f not in ("--config", "--help", "--version")]
        text = open(example).read()
        missing = [k for k in keys if not re.search(r"^#?" + k + r" =( |$)", text, flags=re.M)]
        check(not missing, f"the example config does not document {missing}")
        check(not re.search(r"@[a-z_]+@", text), "the example config has an unsubstituted @var@")
        helper_default = os.path.join(layout("prefix"), layout("libexecdir"), "banger-privhelper")
        check(f"#helper = {helper_default}\n" in text,
              f"the example config does not give the helper's default {helper_default}")

        # Parsed by the installed bangerd: with the file as it is, start-up gets past the
        # configuration (exit 2 would be a config error) and fails only where it should,
        # at the helper socket that does not exist.
        argv = [bangerd, "--config", example, "--state-dir", os.path.join(tmp, "state"),
                "--helper-socket", os.path.join(tmp, "no-helper.sock")]
        config_user = read_config(example)["user"][0]
        if os.geteuid() != 0:
            argv += ["--user", pwd.getpwuid(os.geteuid()).pw_name]
        elif not user_exists(config_user):
            print(f"note: user {config_user} does not exist here; --user {TEST_USER} instead")
            argv += ["--user", TEST_USER]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        check(r.returncode == 3 and "cannot connect to the helper" in r.stdout,
              f"bangerd with the example config: exit {r.returncode} (want 3, no helper):\n"
              f"{r.stdout}")
        print(f"ok: {len(keys)} keys documented; bangerd accepts the example as installed")
    finally:
        inst.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def mentions(text, word):
    """word stands in text as a word of its own (an option, a key)."""
    return re.search(r"(^|\s)" + re.escape(word) + r"\b", text, flags=re.M) is not None


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def case_consistency():
    """The units, the example config and the sysusers/tmpfiles files name the same things."""
    inst = Install()
    try:
        u = {n: read_unit(inst.unit(n)) for n in ("bangerd.socket", "bangerd.service",
                                                  "banger-privhelper.socket",
                                                  "banger-privhelper@.service")}
        daemon_argv = exec_start(u["bangerd.service"])
        helper_argv = exec_start(u["banger-privhelper@.service"])
        config = read_config(inst.path(os.path.join(layout("docdir"), "bangerd.conf.example")))

        # The policy: bangerd refuses a helper that echoes another one.
        for flag in POLICY_FLAGS:
            key = flag.replace("-", "_")
            in_unit = flag_values(helper_argv, "--" + flag)
            in_conf = config.get(key, [])
            check(in_unit == in_conf,
                  f"policy {key}: helper unit says {in_unit}, example config says {in_conf}")
        # The helper socket and who may use it.
        helper_sock = unit_value(u["banger-privhelper.socket"], "Socket", "ListenSequentialPacket")
        check(flag_values(daemon_argv, "--helper-socket") == [helper_sock],
              f"bangerd.service connects to {flag_values(daemon_argv, '--helper-socket')}, "
              f"the helper listens on {helper_sock}")
        user = unit_value(u["bangerd.service"], "Service", "User")
        check(flag_values(helper_argv, "--daemon-user") == [user],
              f"the helper serves {flag_values(helper_argv, '--daemon-user')}, "
              f"bangerd runs as {user}")
        check(config.get("user") == [user], f"example config user {config.get('user')} != {user}")
        # The control socket: root's, for the readers' group. The helper socket: bangerd's
        # user's alone, with nothing for its group or others (split-helper-socket connects).
        check(unit_value(u["bangerd.socket"], "Socket", "SocketGroup") == user,
              f"bangerd.socket: SocketGroup is not {user}")
        check(unit_value(u["bangerd.socket"], "Socket", "SocketMode") == "0660",
              "bangerd.socket: SocketMode")
        check(unit_value(u["banger-privhelper.socket"], "Socket", "SocketUser") == user,
              f"banger-privhelper.socket: SocketUser is not {user}")
        helper_mode = int(unit_value(u["banger-privhelper.socket"], "Socket", "SocketMode"), 8)
        check(helper_mode & 0o077 == 0,
              f"banger-privhelper.socket: SocketMode {helper_mode:04o} lets group or others in")
        for sock in ("bangerd.socket", "banger-privhelper.socket"):
            dir_mode = int(unit_value(u[sock], "Socket", "DirectoryMode"), 8)
            check(dir_mode & 0o022 == 0, f"{sock}: DirectoryMode {dir_mode:04o} is writable "
                                         "by group or others")
        check(unit_value(u["banger-privhelper.socket"], "Socket", "Accept") == "yes", "Accept=yes")
        # bangerd's helper, and its replacement while a stuck one still holds its connection.
        check(unit_value(u["banger-privhelper.socket"], "Socket", "MaxConnections") == "2",
              "MaxConnections=2")
        caps = unit_value(u["banger-privhelper@.service"], "Service", "CapabilityBoundingSet")
        check(sorted(caps.split()) == sorted(["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                                              "CAP_DAC_READ_SEARCH"]),
              f"the helper's bounding set is {caps}")
        check(unit_value(u["bangerd.service"], "Service", "CapabilityBoundingSet") == "",
              "bangerd.service must have an empty bounding set")
        # The control socket is where bangerd and bangerctl look by default.
        control = unit_value(u["bangerd.socket"], "Socket", "ListenStream")
        check(control == "/run/banger/bangerd.sock", f"bangerd.socket listens on {control}")
        # The daemon user, its state dir and the run dir.
        with open(inst.path(os.path.join(layout("sysusersdir"), "banger.conf"))) as f:
            sysusers = [l.split() for l in f if l.strip() and not l.startswith("#")]
        check(any(l[0] == "u" and l[1] == user for l in sysusers),
              f"sysusers.d does not create {user}")
        with open(inst.path(os.path.join(layout("tmpfilesdir"), "banger.conf"))) as f:
            tmpfiles = [l.split() for l in f if l.strip() and not l.startswith("#")]
        state = unit_value(u["bangerd.service"], "Service", "StateDirectory")
        check(["d", f"/var/lib/{state}", "0700", user, user, "-"] in tmpfiles,
              f"tmpfiles.d does not make /var/lib/{state} {user} 0700: {tmpfiles}")
        run_dir = [l for l in tmpfiles if l[:2] == ["d", os.path.dirname(helper_sock)]]
        check(run_dir, "tmpfiles.d does not make the sockets' dir")
        check(run_dir[0][3] == "root" and int(run_dir[0][2], 8) & 0o022 == 0,
              f"tmpfiles.d: the sockets' dir must be root's and not writable by others: "
              f"{run_dir[0]}")
        policy = {f: flag_values(helper_argv, "--" + f) for f in POLICY_FLAGS}
        print(f"consistent: policy {policy}, helper socket {helper_sock}, user {user}")
    finally:
        inst.cleanup()


def case_sysusers_tmpfiles():
    """systemd-sysusers and systemd-tmpfiles, applied to a scratch root, make what bangerd needs."""
    sysusers = need_tool("systemd-sysusers", "systemd")
    tmpfiles = need_tool("systemd-tmpfiles", "systemd")
    inst = Install()
    try:
        root = inst.root  # a scratch root with the install in it, thrown away after
        os.makedirs(os.path.join(root, "etc"), exist_ok=True)
        conf = inst.path(os.path.join(layout("sysusersdir"), "banger.conf"))
        r = subprocess.run([sysusers, "--root", root, conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        check(r.returncode == 0, f"systemd-sysusers: exit {r.returncode}\n{r.stdout}")
        users = {l.split(":")[0]: l.split(":") for l in open(os.path.join(root, "etc/passwd"))}
        groups = {l.split(":")[0]: l.split(":") for l in open(os.path.join(root, "etc/group"))}
        check("banger" in users and "banger" in groups, f"no user/group banger: {users} {groups}")
        uid, gid = int(users["banger"][2]), int(users["banger"][3])
        check(0 < uid < 1000 and gid == int(groups["banger"][2]), f"banger is {users['banger']}")
        check(users["banger"][6].strip().endswith("nologin"), "banger can log in")

        conf = inst.path(os.path.join(layout("tmpfilesdir"), "banger.conf"))
        r = subprocess.run([tmpfiles, "--root", root, "--create", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        check(r.returncode == 0, f"systemd-tmpfiles: exit {r.returncode}\n{r.stdout}")
        for path, mode, owner in (("var/lib/banger", 0o700, (uid, gid)),
                                  ("run/banger", 0o755, (0, 0)),
                                  ("etc/banger", 0o755, (0, 0))):
            st = os.stat(os.path.join(root, path))
            check(stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == mode and
                  (st.st_uid, st.st_gid) == owner,
                  f"/{path}: mode {stat.S_IMODE(st.st_mode):o} owner {st.st_uid}:{st.st_gid}")
        example = inst.path(os.path.join(layout("docdir"), "bangerd.conf.example"))
        conf_path = os.path.join(root, "etc/banger/bangerd.conf")
        check(open(conf_path).read() == open(example).read(),
              "/etc/banger/bangerd.conf is not a copy of the example")
        # An edited configuration is never overwritten.
        with open(conf_path, "a") as f:
            f.write("log_level = debug\n")
        r = subprocess.run([tmpfiles, "--root", root, "--create", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        check(r.returncode == 0 and open(conf_path).read().endswith("log_level = debug\n"),
              "a second systemd-tmpfiles run replaced an edited bangerd.conf")
        print(f"ok: user banger {uid}:{gid}; /var/lib/banger 0700 banger; /run/banger; "
              "/etc/banger/bangerd.conf copied once")
    finally:
        inst.cleanup()


def case_completion():
    """The bash completion loads and completes commands, options and option values."""
    bash = need_tool("bash", "bash")
    inst = Install()
    try:
        comp = inst.path(os.path.join(layout("completiondir"), "bangerctl"))
        # Not under set -e: compgen with no match returns 1, as it does at a prompt.
        script = f"""
source {shlex.quote(comp)} || exit 1
complete -p bangerctl || exit 1
try() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}
        COMPREPLY=(); _bangerctl; echo "$*|${{COMPREPLY[*]}}"; }}
try bangerctl ''
try bangerctl re
try bangerctl --js
try bangerctl register vm1 --on-exit ''
try bangerctl register vm1 --
try bangerctl --socket /nonexistent.sock get ''
"""
        bindir = inst.path(os.path.join(layout("prefix"), layout("bindir")))
        r = subprocess.run([bash, "--norc", "--noprofile", "-c", script], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30,
                           env=dict(os.environ, PATH=bindir + ":" + os.environ.get("PATH", "")))
        check(r.returncode == 0, f"completion script failed:\n{r.stdout}")
        got = dict(l.split("|", 1) for l in r.stdout.splitlines() if "|" in l)
        want = {
            "bangerctl ": "register set get alive clear teardown unregister list reconcile "
                          "watch status metrics",
            "bangerctl re": "register reconcile",
            "bangerctl --js": "--json",
            "bangerctl register vm1 --on-exit ": "teardown keep",
            "bangerctl --socket /nonexistent.sock get ": "",
        }
        for line, expect in want.items():
            check(got.get(line) == expect,
                  f"completing {line!r}: got {got.get(line)!r}, want {expect!r}")
        opts = got.get("bangerctl register vm1 --", "").split()
        check({"--api-sock", "--tap", "--loop-file", "--dm", "--on-exit"} <= set(opts),
              f"register's options: {opts}")
        print("ok: " + "; ".join(f"{k!r} -> {v!r}" for k, v in got.items()))
    finally:
        inst.cleanup()


# --- split mode from the installed units ------------------------------------------------


CAP_NAMES = {"CAP_NET_ADMIN": "net_admin", "CAP_SYS_ADMIN": "sys_admin",
             "CAP_SYS_PTRACE": "sys_ptrace", "CAP_DAC_READ_SEARCH": "dac_read_search"}


def read_lines_until(stream, needle, timeout, sink):
    """Read stream line by line into sink until a line holds needle; False on timeout/EOF."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            return False
        sink.append(line)
        if needle in line:
            return True
    return False


class SplitRun:
    """
    bangerd and the helper started as their installed units say, without systemd as PID 1:
    each socket as its .socket unit makes it (systemd-socket-activate, the helper's with
    --accept), each process with its unit's ExecStart= arguments, user, capability bounding
    set and no_new_privs (setpriv), bangerd with the example configuration. The units'
    namespaces and seccomp filter need systemd and are not applied here (split-syscalls
    checks the filter against what the processes call). With trace_dir, each side runs
    under strace -f, its log in trace_dir.
    """

    def __init__(self, inst, tmp, trace_dir=None, exercise=False):
        self.inst, self.tmp, self.trace_dir, self.exercise = inst, tmp, trace_dir, exercise
        self.helper_proc = self.daemon_proc = None
        self.helper_log = self.daemon_log = ""
        self.kernel_objects = []  # (kind, name) to remove if the test leaves them
        self.teardown_results = None

    def run(self):
        inst, tmp = self.inst, self.tmp
        activate = need_tool("systemd-socket-activate", "systemd")
        setpriv = need_tool("setpriv", "util-linux")
        strace = need_tool("strace", "strace") if self.trace_dir else None
        du = read_unit(inst.unit("bangerd.service"))
        hu = read_unit(inst.unit("banger-privhelper@.service"))
        user = unit_value(du, "Service", "User")
        if not user_exists(user):
            print(f"note: user {user} does not exist here (systemd-sysusers would make it); "
                  f"running as {TEST_USER} instead")
            user = TEST_USER
        pw = pwd.getpwnam(user)
        helper_sock = os.path.join(tmp, "privhelper.sock")
        control = os.path.join(tmp, "bangerd.sock")

        def traced(name, argv):
            if not strace:
                return argv
            return [strace, "-f", "-qq", "-o", os.path.join(self.trace_dir, name)] + argv

        # banger-privhelper@.service: root, the unit's bounding set, no_new_privs.
        hargv = exec_start(hu)
        self.helper_exe = hargv[0] = inst.path(hargv[0])
        hargv = [user if hargv[i - 1] == "--daemon-user" else a for i, a in enumerate(hargv)]
        self.policy = {f: flag_values(hargv, "--" + f) for f in POLICY_FLAGS}
        loop_override = []
        if self.exercise:
            # Loop backing files must lie below a loop root: a scratch one, given to both
            # sides alike (as an operator's drop-in and bangerd.conf would), not the host's.
            images = os.path.join(tmp, "images")
            os.mkdir(images)
            hargv = [images if hargv[i - 1] == "--loop-root" else a for i, a in enumerate(hargv)]
            loop_override = ["--loop-root", images]
        caps = unit_value(hu, "Service", "CapabilityBoundingSet").split()
        bounding = "-all," + ",".join("+" + CAP_NAMES[c] for c in caps)
        check(unit_value(hu, "Service", "NoNewPrivileges") == "yes", "helper NoNewPrivileges")
        self.helper_proc = subprocess.Popen(
            traced("helper", [activate, "--seqpacket", "--accept", "-l", helper_sock,
                              setpriv, "--bounding-set", bounding, "--inh-caps", "-all",
                              "--no-new-privs", "--"] + hargv),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_listening(helper_sock, 10, "the helper socket")
        apply_socket_access(helper_sock, read_unit(inst.unit("banger-privhelper.socket")),
                            {unit_value(du, "Service", "User"): user})

        # bangerd.service: User=, no capabilities, no_new_privs, its ExecStart= arguments,
        # socket-activated, READY=1 over NOTIFY_SOCKET.
        notify_path = os.path.join(tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        os.chmod(notify_path, 0o666)
        state = os.path.join(tmp, "state")  # StateDirectory=banger, StateDirectoryMode=0700
        os.mkdir(state, 0o700)
        os.chown(state, pw.pw_uid, pw.pw_gid)
        dargv = exec_start(du)
        self.daemon_exe = dargv[0] = inst.path(dargv[0])
        dargv = [helper_sock if dargv[i - 1] == "--helper-socket" else a
                 for i, a in enumerate(dargv)]
        dargv += ["--config", inst.path(os.path.join(layout("docdir"), "bangerd.conf.example")),
                  "--state-dir", state, "--user", user] + loop_override
        check(unit_value(du, "Service", "CapabilityBoundingSet") == "", "bangerd bounding set")
        self.daemon_proc = subprocess.Popen(
            traced("bangerd", [activate, "-l", control, "-E", f"NOTIFY_SOCKET={notify_path}",
                               setpriv, "--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid),
                               "--init-groups", "--bounding-set", "-all", "--inh-caps", "-all",
                               "--no-new-privs", "--"] + dargv),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_listening(control, 10, "the control socket")
        os.chmod(control, 0o666)
        # Socket activation starts bangerd on the first connection: bangerctl status is it.
        bangerctl = inst.path(os.path.join(layout("prefix"), layout("bindir"), "bangerctl"))
        r = subprocess.run([bangerctl, "--socket", control, "--json", "status"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        if r.returncode != 0:
            self.stop()
            fail(f"bangerctl status: exit {r.returncode}: {r.stdout}\n--- bangerd:\n"
                 f"{self.daemon_log}\n--- banger-privhelper:\n{self.helper_log}")
        self.status = json.loads(r.stdout.splitlines()[-1])
        if self.exercise:
            self.teardown(bangerctl, control)
        notify.settimeout(10)
        self.notified = []
        try:
            while not any("READY=1" in m for m in self.notified):
                self.notified.append(notify.recv(4096).decode())
        except socket.timeout:
            pass
        notify.close()
        self.stop()

    def teardown(self, bangerctl, control):
        """Register a VM whose tap, loop (and DM device, where DM exists) are real, tear it down."""
        tag = f"bt{os.getpid() % 10000}"
        tap = (self.policy["tap-prefix"][0] + tag)[:15]
        sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        self.kernel_objects.append(("tap", tap))
        image = os.path.join(self.tmp, "images", f"{tag}.img")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        self.kernel_objects.append(("loop", sh("losetup", "-f", "--show", image)))
        args = ["--tap", tap, "--loop-file", image]
        want = [("loop", "removed"), ("tap", "removed")]
        if os.path.exists("/dev/mapper/control") and shutil.which("dmsetup"):
            dm = self.policy["dm-prefix"][0] + tag
            sh("dmsetup", "create", dm, "--uuid", self.policy["dm-uuid-prefix"][0] + tag,
               "--table", "0 8 zero")
            self.kernel_objects.append(("dm", dm))
            args += ["--dm", dm]
            want.insert(0, ("dm", "removed"))
        else:
            print("note: no device-mapper here (/dev/mapper/control, dmsetup): DM teardown "
                  "not exercised")
        api_sock = os.path.join(self.policy["api-sock-root"][0], f"{tag}.sock")
        ctl = [bangerctl, "--socket", control, "--json"]
        sh(*ctl, "register", "vm-" + tag, "--api-sock", api_sock, *args)
        out = sh(*ctl, "teardown", "vm-" + tag)
        sh(*ctl, "unregister", "vm-" + tag)
        self.teardown_results = json.loads(out.splitlines()[-1])["results"]
        got = [(r["kind"], r["status"]) for r in self.teardown_results]
        check(got == want, f"teardown through the split pair: {self.teardown_results}, want {want}")

    def remove_kernel_objects(self):
        for kind, name in self.kernel_objects:
            if kind == "tap":
                subprocess.run(["ip", "link", "del", name], capture_output=True)
            elif kind == "loop":
                subprocess.run(["losetup", "-d", name], capture_output=True)
            elif kind == "dm":
                subprocess.run(["dmsetup", "remove", name], capture_output=True)

    def stop(self):
        """SIGTERM bangerd (the helper then sees EOF and exits), then the helper's activator."""
        if self.daemon_proc:
            self.daemon_log = stop(self.daemon_proc, traced=bool(self.trace_dir))
        if self.helper_proc:
            self.helper_log = stop(self.helper_proc, traced=bool(self.trace_dir))

    def kill(self):
        for p in (self.daemon_proc, self.helper_proc):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        self.remove_kernel_objects()

    def check_served(self):
        check(any("READY=1" in m for m in self.notified), f"no READY=1: {self.notified}")
        check(self.daemon_proc.returncode == 0,
              f"bangerd exit {self.daemon_proc.returncode}:\n{self.daemon_log}")
        check(self.status.get("helper_privileged") is True,
              f"the helper is not privileged: {self.status}\n{self.helper_log}")
        check("four capabilities" in self.helper_log and "op=hello" in self.helper_log,
              f"the helper did not serve bangerd:\n{self.helper_log}")


def socket_access(sock_unit, stand_in):
    """
    (uid, gid, mode) that systemd gives the AF_UNIX socket file of sock_unit: SocketUser=
    (default root), SocketGroup= (default: that user's group), SocketMode= (default 0666).
    stand_in maps a user the unit names that this host lacks (systemd-sysusers would make
    it) to the account that stands in for it; its group then stands in for the group of
    the same name.
    """
    sock = sock_unit.get("Socket", {})
    user = (sock.get("SocketUser") or ["root"])[-1]
    pw = pwd.getpwnam(stand_in.get(user, user))
    group = (sock.get("SocketGroup") or [""])[-1]
    if not group:
        gid = pw.pw_gid
    elif group in stand_in:
        gid = pwd.getpwnam(stand_in[group]).pw_gid
    else:
        gid = grp.getgrnam(group).gr_gid
    return pw.pw_uid, gid, int((sock.get("SocketMode") or ["0666"])[-1], 8)


def apply_socket_access(path, sock_unit, stand_in):
    """Give the socket file at path the owner and mode its .socket unit says (as PID 1 would)."""
    uid, gid, mode = socket_access(sock_unit, stand_in)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return uid, gid, mode


CONNECT_PY = """
import errno, os, socket, sys
kind = {"stream": socket.SOCK_STREAM, "seqpacket": socket.SOCK_SEQPACKET}[sys.argv[2]]
s = socket.socket(socket.AF_UNIX, kind)
try:
    s.connect(sys.argv[1])
    result = "ok"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e.errno))
print(result, os.getuid(), ",".join(str(g) for g in sorted(os.getgroups())))
"""


def connect_as(setpriv, account, path, kind):
    """connect() to path as account (its uid, gid and every group /etc/group gives it):
    'ok' or the errno's name, and the child's uid and groups as the kernel saw them."""
    r = subprocess.run([setpriv, "--reuid", account, "--regid", str(pwd.getpwnam(account).pw_gid),
                        "--init-groups", "--", sys.executable, "-c", CONNECT_PY, path, kind],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30,
                       cwd="/")
    check(r.returncode == 0 and len(r.stdout.split()) == 3,
          f"connecting as {account}: exit {r.returncode}: {r.stdout}")
    result, uid, groups = r.stdout.split()
    return result, int(uid), {int(g) for g in groups.split(",") if g}


def case_split_helper_socket():
    """
    Split mode's helper socket, set up as the installed banger-privhelper.socket says (its
    SocketUser=, SocketGroup=, SocketMode=, DirectoryMode=), admits bangerd's user and no
    one else. A reader, a real account made for the test and put in every group the two
    .socket units name (group banger: who may read bangerd's API), reaches a control
    socket set up as bangerd.socket says, but gets EACCES from the helper socket, and no
    helper is started for it; bangerd's user connects, and one is.
    """
    if os.geteuid() != 0:
        skip("needs root to make accounts and give sockets their owners")
    activate = need_tool("systemd-socket-activate", "systemd")
    setpriv = need_tool("setpriv", "util-linux")
    need_tool("useradd", "passwd")
    inst = Install()
    tmp = tempfile.mkdtemp(prefix="banger-test-helper-socket-")
    os.chmod(tmp, 0o755)
    accounts, helper = [], None
    try:
        du = read_unit(inst.unit("bangerd.service"))
        hs = read_unit(inst.unit("banger-privhelper.socket"))
        cs = read_unit(inst.unit("bangerd.socket"))
        user = unit_value(du, "Service", "User")
        stand_in = {}
        if not user_exists(user):
            accounts.append(Account("bgdmn"))
            stand_in[user] = accounts[-1].name
            print(f"note: user {user} does not exist here (systemd-sysusers would make it); "
                  f"account {stand_in[user]} stands in for it and its group")
        daemon = stand_in.get(user, user)

        # Both sockets in one directory, as in the units, made as PID 1 would (DirectoryMode=).
        helper_path = unit_value(hs, "Socket", "ListenSequentialPacket")
        control_path = unit_value(cs, "Socket", "ListenStream")
        check(os.path.dirname(helper_path) == os.path.dirname(control_path),
              f"the units put the sockets in different dirs: {helper_path}, {control_path}")
        run_dir = os.path.join(tmp, "run")
        os.mkdir(run_dir)
        os.chmod(run_dir, int(unit_value(hs, "Socket", "DirectoryMode"), 8))
        helper_sock = os.path.join(run_dir, os.path.basename(helper_path))
        control_sock = os.path.join(run_dir, os.path.basename(control_path))

        # The helper socket: Accept=yes, each accepted connection leaves a line in accepted.
        accepted = os.path.join(tmp, "accepted")
        open(accepted, "w").close()
        check(unit_value(hs, "Socket", "Accept") == "yes", "banger-privhelper.socket: Accept=yes")
        helper = subprocess.Popen(
            [activate, "--seqpacket", "--accept", "-l", helper_sock, "sh", "-c",
             'echo accepted >>"$0"', accepted],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_listening(helper_sock, 10, "the helper socket")
        h_uid, h_gid, h_mode = apply_socket_access(helper_sock, hs, stand_in)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.bind(control_sock)
        control.listen(8)
        c_uid, c_gid, c_mode = apply_socket_access(control_sock, cs, stand_in)
        print(f"helper socket {h_uid}:{h_gid} {h_mode:04o}, control socket {c_uid}:{c_gid} "
              f"{c_mode:04o}, in a dir of mode {stat.S_IMODE(os.stat(run_dir).st_mode):04o}, "
              "as the installed units say")

        reader = Account("bgrdr")
        accounts.append(reader)
        groups = sorted({grp.getgrgid(g).gr_name for g in (h_gid, c_gid)})
        _useradd_locked(["usermod", "--append", "--groups", ",".join(groups), reader.name])
        want_gids = {grp.getgrnam(g).gr_gid for g in groups}

        result, uid, gids = connect_as(setpriv, reader.name, control_sock, "stream")
        check(uid == reader.uid and want_gids <= gids,
              f"the reader runs as uid {uid} groups {gids}, want {reader.uid} in {want_gids}")
        check(result == "ok", f"the reader (groups {groups}) cannot reach the control socket: "
                              f"{result}; the test's premise fails")
        print(f"reader {reader.name} (uid {uid}, groups {groups}): control socket: connected")
        result, _, _ = connect_as(setpriv, reader.name, helper_sock, "seqpacket")
        check(result == "EACCES",
              f"the reader (groups {groups}) connecting to the helper socket: {result}, want "
              "EACCES")
        check(open(accepted).read() == "",
              f"a helper was started for the reader: {open(accepted).read()!r}")
        print(f"reader {reader.name}: helper socket: EACCES, no helper started")

        result, uid, _ = connect_as(setpriv, daemon, helper_sock, "seqpacket")
        check(result == "ok", f"bangerd's user {daemon} connecting to the helper socket: {result}")
        deadline = time.monotonic() + 10
        while open(accepted).read() != "accepted\n":
            check(time.monotonic() < deadline,
                  f"no helper started for {daemon}: {open(accepted).read()!r}")
            time.sleep(0.02)
        print(f"bangerd's user {daemon} (uid {uid}): helper socket: connected, one helper started")
    finally:
        if helper:
            stop(helper)
        for account in reversed(accounts):  # the reader first: it is in the stand-in's group
            account.remove()
        inst.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def case_split_under_units():
    """Split mode works as the installed units start it (see SplitRun)."""
    if os.geteuid() != 0:
        skip("needs root to start the helper as root and bangerd as the daemon user")
    inst = Install()
    tmp = tempfile.mkdtemp(prefix="banger-test-split-units-")
    os.chmod(tmp, 0o755)
    run = SplitRun(inst, tmp)
    try:
        run.run()
        run.check_served()
        print(f"split mode from the installed units: {run.notified[-1].strip()!r}; "
              f"bangerctl status {run.status}")
    finally:
        run.kill()
        inst.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def allowed_syscalls(unit):
    """The allow-list a unit's SystemCallFilter= lines make, as systemd builds it."""
    analyze = need_tool("systemd-analyze", "systemd")
    out = subprocess.run([analyze, "syscall-filter", "--no-pager"], stdout=subprocess.PIPE,
                         text=True, timeout=30).stdout
    groups, current = {}, None
    for line in out.splitlines():
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if line.startswith("@"):
            current = groups.setdefault(word.split()[0], [])
        elif current is not None:
            current.append(word.split()[0])

    def expand(name):
        if not name.startswith("@"):
            return {name}
        check(name in groups, f"unknown syscall group {name}")
        return set().union(*(expand(n) for n in groups[name]))

    entries = unit.get("Service", {}).get("SystemCallFilter", [])
    check(entries and not entries[0].startswith("~"), "SystemCallFilter= is not an allow-list")
    allowed = expand("@default")  # systemd adds it to every allow-list first
    for entry in entries:
        deny = entry.startswith("~")
        names = set().union(*(expand(n) for n in entry.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    # Always permitted by systemd, whatever the filter says.
    return allowed | {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}


def traced_syscalls(trace_file, exe):
    """
    Syscalls made by the processes that exec'ed exe, from that execve on (as seccomp sees
    them): {name: count}, and the address families their socket()/socketpair() asked for.
    """
    tracked, calls, families = set(), {}, set()
    unix_fds, nscd_only = {}, True  # AF_UNIX sockets: {(pid, fd): connected to nscd?}
    line_re = re.compile(r"^(\d+)\s+([a-z0-9_]+)\((.*)")
    with open(trace_file) as f:
        for line in f:
            m = line_re.match(line)
            if not m:
                continue
            pid, name, rest = int(m.group(1)), m.group(2), m.group(3)
            if (name == "execve" and rest.startswith(json.dumps(exe)) and
                    rest.rstrip().endswith("= 0")):
                tracked.add(pid)
                continue
            if pid not in tracked:
                continue
            calls[name] = calls.get(name, 0) + 1
            if name in ("socket", "socketpair"):
                family = rest.split(",", 1)[0]
                families.add(family)
                fd = re.search(r"= (\d+)$", rest.rstrip())
                if family == "AF_UNIX" and name == "socket" and fd:
                    unix_fds[(pid, int(fd.group(1)))] = False
                elif family == "AF_UNIX":
                    nscd_only = False
            if name == "connect":
                fd = int(rest.split(",", 1)[0])
                if (pid, fd) in unix_fds:
                    unix_fds[(pid, fd)] = bool(
                        re.search(r'sun_path="(/var)?/run/nscd/socket"', rest))
            if name in ("clone", "clone3", "fork", "vfork"):
                child = re.search(r"= (\d+)$", rest.rstrip())
                if child:
                    tracked.add(int(child.group(1)))
    # glibc's NSS asks nscd first and falls back to the next source when the socket cannot
    # be made: an AF_UNIX socket used only for that is no need for AF_UNIX.
    if unix_fds and nscd_only and all(unix_fds.values()):
        families.discard("AF_UNIX")
        families.add("AF_UNIX (nscd lookup only, glibc falls back)")
    return tracked, calls, families


def case_split_syscalls():
    """
    Every syscall bangerd and the helper make in split mode (start-up, HELLO, the start-up
    SCAN, a GetStatus call, a Register and a Teardown of a real tap, loop device and,
    where the kernel has device-mapper, DM device, SIGTERM and shutdown) is one that their
    unit's SystemCallFilter= lets through, and every socket they create is of a family
    that RestrictAddressFamilies= allows: traced with strace while they run as SplitRun
    starts them. Probing a live firecracker is not exercised here (no VM runs).
    """
    for tool, package in (("ip", "iproute2"), ("losetup", "util-linux")):
        need_tool(tool, package)
    if os.geteuid() != 0:
        skip("needs root to start the helper as root and bangerd as the daemon user")
    inst = Install()
    tmp = tempfile.mkdtemp(prefix="banger-test-split-syscalls-")
    os.chmod(tmp, 0o755)
    traces = os.path.join(tmp, "traces")
    os.mkdir(traces)
    run = SplitRun(inst, tmp, trace_dir=traces, exercise=True)
    try:
        run.run()
        run.check_served()
        bad = []
        for side, unit, exe in (("bangerd", "bangerd.service", run.daemon_exe),
                                ("helper", "banger-privhelper@.service", run.helper_exe)):
            allowed = allowed_syscalls(read_unit(inst.unit(unit)))
            u = read_unit(inst.unit(unit))
            pids, calls, families = traced_syscalls(os.path.join(traces, side), exe)
            check(pids, f"the trace of {side} never shows execve of {exe}")
            denied = sorted(set(calls) - allowed)
            permitted = set(unit_value(u, "Service", "RestrictAddressFamilies").split())
            refused = sorted(f for f in families - permitted if "nscd" not in f)
            print(f"{unit}: {len(calls)} distinct syscalls traced in {len(pids)} process(es); "
                  f"outside SystemCallFilter=: {denied or 'none'}; socket families "
                  f"{sorted(families)}, outside RestrictAddressFamilies=: {refused or 'none'}")
            bad += [f"{unit}: {name} ({calls[name]}x)" for name in denied]
            bad += [f"{unit}: socket family {f}" for f in refused]
        print(f"teardown through the pair: {run.teardown_results}")
        check(not bad, "calls the units' filters would refuse:\n" + "\n".join(bad))
    finally:
        run.kill()
        inst.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def stop(proc, traced=False):
    """
    SIGTERM what proc started (systemd-socket-activate, or bangerd it exec'ed; under strace,
    strace's child, since strace would only detach) and return what was logged.
    """
    if proc.poll() is None:
        target = proc.pid
        if traced:
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    target = int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                target = None  # strace has nothing left to trace: it is about to exit
        if target:
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        err += "\n(killed: did not exit within 15 s of SIGTERM)"
    return err


CASES = {
    "destdir": case_destdir,
    "verify": case_verify,
    "security-bangerd": case_security_bangerd,
    "security-helper": case_security_helper,
    "security-metrics": case_security_metrics,
    "man-pages": case_man_pages,
    "example-config": case_example_config,
    "consistency": case_consistency,
    "sysusers-tmpfiles": case_sysusers_tmpfiles,
    "completion": case_completion,
    "split-under-units": case_split_under_units,
    "split-syscalls": case_split_syscalls,
    "split-helper-socket": case_split_helper_socket,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        fail(f"usage: {sys.argv[0]} {'|'.join(CASES)}")
    CASES[sys.argv[1]]()
