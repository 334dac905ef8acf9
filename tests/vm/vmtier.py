#!/usr/bin/env python3
"""The real-kernel test tier: banger end to end on Debian's own kernel, in qemu.

This machine's kernel has no device-mapper, so the DM third of banger's job
is proven in a VM: Debian's kernel (linux-image-amd64, fetched with
`apt-get download`) boots under qemu (TCG: no KVM is needed) into an
initramfs built here from

  - the kernel package's dm-mod, dm-bufio, dm-snapshot, loop and tun
    modules (those that are modules), in dependency order;
  - busybox-static (the guest's sh and tools, tunctl for the taps);
  - the freshly built bangerd, banger-privhelper, bangerctl and the stub
    firecracker, dmsetup and losetup, with every shared library ldd names;
  - guest/init and guest/scenarios.sh, which run the scenarios and print
    one BANGER-SCENARIO line each on the serial console.

The .debs are cached between runs ($BANGER_VM_CACHE, else
/var/cache/banger-vm), keyed by the file name apt gives them (package,
version, architecture); the initramfs is rebuilt every run.

  vmtier.py boot --results FILE --workdir DIR
      Build, boot, parse the console, write FILE (JSON), print each
      scenario's result and time. Exits 0 when the VM ran every scenario
      (each scenario's own test reports its outcome), 1 when the boot or
      the run failed (no end, a scenario missing, a BANGER-VM-ERROR line,
      bangerd not seen to stop at the end) or the tier could not be built
      (a package that cannot be downloaded or does not match its SHA256, a
      missing tool other than qemu), 77 only when qemu is not installed
      ("SKIP: qemu-system-x86_64 is not installed", the one reason
      tests/expected-tests.txt declares for this tier).
  vmtier.py scenario N --results FILE --workdir DIR
      Report scenario N from FILE when that was written in this meson run
      (same parent process); otherwise boot first (under a lock, so the
      scenario tests of one run share one boot).
"""
import argparse
import fcntl
import glob
import gzip
import hashlib
import io
import json
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = {
    1: "dm-snapshot-exit-teardown",
    2: "kill-both-then-reconcile",
    3: "busy-then-teardown",
    4: "refused-outside-policy",
    5: "starting-record-reconciled",
}
# What the scenarios need from the kernel, by module name; dm-snapshot pulls in dm-bufio.
# unix_diag: the helper asks sock_diag which socket listens on which node (identity).
KERNEL_MODULES = ["dm_mod", "dm_snapshot", "loop", "tun", "unix_diag"]
BOOT_TIMEOUT_S = int(os.environ.get("BANGER_VM_TIMEOUT", "540"))
QEMU = "qemu-system-x86_64"
GUEST_USER = ("banger", 100, 100)


class Skip(Exception):
    """This machine cannot run the tier: exit 77. Raised for one fact only, qemu not
    installed; anything else that stops the tier (a download, a checksum, another tool)
    is a failure, since this machine reaches Debian's packages and ./dev deps installs
    the tools."""


def require_qemu():
    if not shutil.which(QEMU):
        raise Skip(f"{QEMU} is not installed (apt-get install qemu-system-x86; ./dev deps does)")


def log(msg):
    print(f"vm: {msg}", flush=True)


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


# --- packages ---------------------------------------------------------------


def cache_dir():
    for d in (os.environ.get("BANGER_VM_CACHE"), "/var/cache/banger-vm",
              os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                           "banger-vm")):
        if not d:
            continue
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    raise RuntimeError("no writable cache dir for the downloaded packages (set BANGER_VM_CACHE)")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(pkg, cache):
    """The .deb of pkg's candidate version, from the cache or `apt-get download`, checked
    against the SHA256 apt names. Never another version: a package apt cannot name, download
    or verify fails the tier (a cached .deb of some other version would hide exactly that)."""
    if not shutil.which("apt-get"):
        raise RuntimeError("apt-get not found: cannot fetch Debian packages")
    p = subprocess.run(["apt-get", "download", "--print-uris", pkg], capture_output=True,
                       text=True)
    m = re.search(r"^'(\S+)' (\S+\.deb) (\d+) SHA256:([0-9a-f]{64})", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"apt-get download --print-uris {pkg} failed: "
                           f"{(p.stderr or p.stdout).strip()} (run apt-get update?)")
    name, size, sha = m.group(2), int(m.group(3)), m.group(4)
    path = os.path.join(cache, name)
    if os.path.exists(path) and os.path.getsize(path) == size and sha256_of(path) == sha:
        return path
    log(f"apt-get download {pkg} ({name}, {size} bytes)")
    p = subprocess.run(["apt-get", "download", pkg], cwd=cache, capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"apt-get download {pkg} failed: {p.stderr.strip()}")
    if sha256_of(path) != sha:
        os.unlink(path)
        raise RuntimeError(f"apt-get download {pkg}: {name} does not match its SHA256")
    # A new version replaces the old ones: the cache holds one per package.
    for old in glob.glob(os.path.join(cache, f"{pkg}_*.deb")):
        if old != path:
            os.unlink(old)
            shutil.rmtree(extraction_dir(old, cache), ignore_errors=True)
            if os.path.exists(extraction_dir(old, cache) + ".done"):
                os.unlink(extraction_dir(old, cache) + ".done")
    return path


def extraction_dir(deb, cache):
    return os.path.join(cache, "x", os.path.basename(deb)[:-len(".deb")])


def extract(deb, cache):
    """dpkg-deb -x into the cache, once per .deb (a stamp marks a finished extraction)."""
    dest = extraction_dir(deb, cache)
    stamp = dest + ".done"
    if not os.path.exists(stamp):
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        run(["dpkg-deb", "-x", deb, dest])
        open(stamp, "w").close()
    return dest


def kernel_package(cache):
    """linux-image-amd64 is a metapackage: its Depends names the real image package."""
    meta = fetch("linux-image-amd64", cache)
    depends = run(["dpkg-deb", "-f", meta, "Depends"])
    m = re.search(r"(linux-image-[0-9][^\s,(|]*-amd64)", depends)
    if not m:
        raise RuntimeError(f"{meta}: no linux-image package in Depends: {depends.strip()}")
    return fetch(m.group(1), cache)


# --- kernel modules ---------------------------------------------------------


def module_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        import lzma  # only for kernels that compress their modules
        return lzma.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                              check=True).stdout
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data


def modinfo_depends(ko):
    """The depends= entry of a module's .modinfo section (no modinfo binary needed)."""
    m = re.search(rb"\0depends=([^\0]*)\0", ko)
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def kernel_modules(moddir):
    """[(name, bytes)] in load order for KERNEL_MODULES and what they depend on."""
    builtin = set()
    with open(os.path.join(moddir, "modules.builtin")) as f:
        for line in f:
            builtin.add(re.sub(r"\.ko.*$", "", os.path.basename(line.strip())).replace("-", "_"))
    index = {}
    for root, _, files in os.walk(os.path.join(moddir, "kernel")):
        for fn in files:
            m = re.match(r"(.*)\.ko(\.xz|\.zst|\.gz)?$", fn)
            if m:
                index[m.group(1).replace("-", "_")] = os.path.join(root, fn)
    order, seen = [], set()

    def visit(name, chain):
        if name in seen or name in builtin:
            return
        if name in chain:
            raise RuntimeError(f"module dependency cycle: {chain + [name]}")
        if name not in index:
            raise RuntimeError(f"module {name} is neither built in nor in {moddir}")
        ko = module_bytes(index[name])
        for dep in modinfo_depends(ko):
            visit(dep, chain + [name])
        seen.add(name)
        order.append((name, ko))

    for name in KERNEL_MODULES:
        visit(name, [])
    log(f"modules (load order): {', '.join(n for n, _ in order) or 'none'}; built in: "
        f"{', '.join(n for n in KERNEL_MODULES if n in builtin) or 'none'}")
    return order


# --- initramfs --------------------------------------------------------------


class Cpio:
    """A newc cpio archive built in memory: what the kernel unpacks as the initramfs."""

    def __init__(self):
        self.entries = {}  # path -> (mode, data, rdev)

    def dir(self, path, mode=0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.entries:
                self.entries[p] = (stat.S_IFDIR | (mode if i == len(parts) else 0o755), b"", 0)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self.entries[path] = (stat.S_IFREG | mode, data, 0)

    def copy(self, src, path, mode=None):
        with open(src, "rb") as f:
            data = f.read()
        self.file(path, data, mode if mode is not None else stat.S_IMODE(os.stat(src).st_mode))

    def symlink(self, path, target):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self.entries[path] = (stat.S_IFLNK | 0o777, target.encode(), 0)

    def chardev(self, path, major, minor, mode=0o600):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self.entries[path] = (stat.S_IFCHR | mode, b"", (major, minor))

    def write(self, out):
        buf = io.BytesIO()

        def pad():
            buf.write(b"\0" * (-buf.tell() % 4))

        def entry(ino, name, mode, data, rdev):
            rmaj, rmin = rdev if rdev else (0, 0)
            nlink = 2 if stat.S_ISDIR(mode) else 1
            fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name) + 1, 0]
            buf.write(b"070701" + b"".join(b"%08X" % v for v in fields))
            buf.write(name.encode() + b"\0")
            pad()
            buf.write(data)
            pad()

        # Parents sort before their children.
        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rdev = self.entries[name]
            entry(ino, name, mode, data, rdev)
        entry(0, "TRAILER!!!", 0, b"", None)
        with gzip.open(out, "wb", compresslevel=6) as f:
            f.write(buf.getvalue())


def shared_libraries(binary):
    """Every library ldd resolves for binary, and its dynamic loader; [] when static."""
    p = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if p.returncode != 0:
        if "not a dynamic executable" in p.stdout + p.stderr:
            return []
        raise RuntimeError(f"ldd {binary}: {p.stderr.strip()}")
    libs = []
    for line in p.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"ldd {binary}: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def host_tool(name):
    path = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise RuntimeError(f"{name} not found on this host (./dev deps installs it)")
    return path


def build_initramfs(workdir, cache):
    env = os.environ
    binaries = {
        "/usr/bin/bangerd": env.get("BANGERD"),
        "/usr/libexec/banger/banger-privhelper": env.get("BANGER_HELPER"),
        "/usr/bin/bangerctl": env.get("BANGERCTL"),
        "/usr/bin/firecracker": env.get("BANGER_STUB_FIRECRACKER"),
    }
    for dest, src in binaries.items():
        if not src or not os.path.exists(src):
            raise RuntimeError(f"{dest}: no built binary (run through meson test; got {src!r})")
    binaries["/usr/sbin/dmsetup"] = host_tool("dmsetup")
    binaries["/usr/sbin/losetup"] = host_tool("losetup")

    # Two build dirs may run the tier at once: one of them fetches and extracts at a time.
    lock = open(os.path.join(cache, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    kernel_deb = kernel_package(cache)
    busybox_deb = fetch("busybox-static", cache)
    kroot = extract(kernel_deb, cache)
    vmlinuz = glob.glob(os.path.join(kroot, "boot", "vmlinuz-*"))
    moddirs = glob.glob(os.path.join(kroot, "lib", "modules", "*"))
    if len(vmlinuz) != 1 or len(moddirs) != 1:
        raise RuntimeError(f"{kernel_deb}: want one vmlinuz and one modules dir, "
                           f"found {vmlinuz} and {moddirs}")
    bbroot = extract(busybox_deb, cache)
    busybox = os.path.join(bbroot, "bin", "busybox")
    lock.close()

    c = Cpio()
    for d in ("dev", "proc", "sys", "run", "tmp", "srv", "root", "var/lib", "var/log", "etc",
              "usr/sbin", "sbin"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.copy(busybox, "bin/busybox", 0o755)
    provided = {os.path.basename(p) for p in binaries}
    for applet in run([busybox, "--list"]).split():
        if applet not in provided and applet != "busybox":
            c.symlink(f"bin/{applet}", "busybox")
    libs = set()
    for dest, src in binaries.items():
        c.copy(src, dest, 0o755)
        libs.update(shared_libraries(src))
    for lib in sorted(libs):
        c.copy(os.path.realpath(lib), lib, 0o755)
    modules = kernel_modules(moddirs[0])
    for name, ko in modules:
        c.file(f"lib/modules/{name}.ko", ko)
    c.file("etc/banger-vm/modules", "".join(f"{n}\n" for n, _ in modules).encode())
    c.copy(os.path.join(HERE, "guest", "init"), "init", 0o755)
    c.copy(os.path.join(HERE, "guest", "scenarios.sh"), "etc/banger-vm/scenarios.sh", 0o755)
    user, uid, gid = GUEST_USER
    c.file("etc/passwd", (f"root:x:0:0:root:/root:/bin/sh\n"
                          f"{user}:x:{uid}:{gid}:banger:/var/lib/banger:/bin/false\n"
                          f"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n").encode())
    c.file("etc/group", f"root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n".encode())
    initrd = os.path.join(workdir, "initramfs.cpio.gz")
    c.write(initrd)
    log(f"kernel {os.path.basename(kernel_deb)}, busybox {os.path.basename(busybox_deb)}; "
        f"initramfs {os.path.getsize(initrd) >> 10} KiB: {len(c.entries)} entries, "
        f"{len(libs)} shared libraries")
    return vmlinuz[0], initrd


# --- booting ----------------------------------------------------------------

MARK = re.compile(r"BANGER-SCENARIO (\d+) (\S+) (START|PASS|FAIL)(?: (\d+))?(?: (.*))?$")


class Console:
    """qemu's serial console, line by line, each line also written timestamped to a file."""

    def __init__(self, proc, path, start, deadline):
        self.proc, self.path, self.start, self.deadline = proc, path, start, deadline
        self.timed_out = False

    def lines(self):
        """Yield (seconds since start, line) until EOF or the deadline (then timed_out)."""
        fd = self.proc.stdout.fileno()
        pending = b""
        with open(self.path, "w") as console:
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = True
                    return
                ready, _, _ = select.select([fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip("\r")
                    t = time.monotonic() - self.start
                    console.write(f"[{t:7.2f}] {line}\n")
                    console.flush()
                    yield t, line


def qemu_wait(proc, res, start):
    """Let qemu finish powering off (bounded), then record its status and the total time."""
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    res["qemu_status"] = proc.returncode
    res["total_s"] = round(time.monotonic() - start, 1)


def boot(vmlinuz, initrd, workdir):
    """Boot, parse the console; returns the results dict."""
    cmd = [QEMU, "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
           "-nographic", "-no-reboot", "-nic", "none", "-kernel", vmlinuz, "-initrd", initrd,
           "-append", "console=ttyS0 panic=-1 quiet loglevel=3"]
    log("$ " + " ".join(cmd))
    console_path = os.path.join(workdir, "console.log")
    res = {"scenarios": {}, "console": console_path, "command": cmd}
    seg = {}  # scenario -> its console lines
    current = None
    start = time.monotonic()
    deadline = start + BOOT_TIMEOUT_S
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    console = Console(proc, console_path, start, deadline)
    for t, line in console.lines():
        if current is not None:
            seg[current].append(line)
        if "BANGER-VM-INIT" in line:
            res["boot_s"] = round(t, 1)
            log(f"guest init after {t:.1f} s: {line[line.index('BANGER-VM-INIT'):]}")
        elif "BANGER-VM-ERROR" in line or "Kernel panic" in line:
            log(line.strip())
            res.setdefault("errors", []).append(line.strip())
        elif "BANGER-VM-BANGERD-STOPPED" in line:
            res["bangerd_stopped"] = True
        elif "BANGER-VM-DONE" in line:
            res["done_s"] = round(t, 1)
        m = MARK.search(line)
        if not m:
            continue
        n, name, what = int(m.group(1)), m.group(2), m.group(3)
        if what == "START":
            current = n
            seg[n] = [line]
            continue
        current = None
        res["scenarios"][str(n)] = {
            "name": name, "result": what, "ms": int(m.group(4) or 0),
            "reason": (m.group(5) or "").strip(), "console": seg.get(n, [])}
        log(f"scenario {n} {name}: {what} in {int(m.group(4) or 0) / 1000:.1f} s"
            + (f": {m.group(5)}" if what == "FAIL" else ""))
    if console.timed_out:
        res["error"] = f"no end within {BOOT_TIMEOUT_S} s (BANGER_VM_TIMEOUT)"
    qemu_wait(proc, res, start)
    if "done_s" not in res and "error" not in res:
        res["error"] = f"qemu ended (status {proc.returncode}) before the scenarios finished"
    if "boot_s" not in res:
        with open(console_path) as f:
            tail = f.read()[-3000:]
        res["error"] = (res.get("error", "") + "; the guest init never started. Console:\n"
                        + tail)
    return res


def write_results(path, res):
    res["ppid"] = os.getppid()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, path)


def do_boot(results_path, workdir):
    os.makedirs(workdir, exist_ok=True)
    t0 = time.monotonic()
    try:
        require_qemu()
        for tool in ("dpkg-deb", "ldd"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} not found")
        cache = cache_dir()
        vmlinuz, initrd = build_initramfs(workdir, cache)
        build_s = time.monotonic() - t0
        log(f"initramfs built in {build_s:.1f} s (cache {cache})")
        res = boot(vmlinuz, initrd, workdir)
        res["build_s"] = round(build_s, 1)
    except Skip as e:
        res = {"skip": str(e)}
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        # Not this machine's lack but a broken tier: a failure, named, never a skip.
        res = {"error": f"building the VM failed: {e}", "scenarios": {}, "console": None}
    res["tier_s"] = round(time.monotonic() - t0, 1)
    write_results(results_path, res)
    return res


def report_boot(res):
    if "skip" in res:
        print(f"SKIP: {res['skip']}")
        return SKIP
    print(f"tier: {res['tier_s']} s (initramfs {res.get('build_s', '-')} s, guest init after "
          f"{res.get('boot_s', '-')} s, qemu {res.get('total_s', '-')} s); "
          f"console: {res.get('console')}")
    for n, name in SCENARIOS.items():
        s = res["scenarios"].get(str(n))
        if s:
            print(f"  scenario {n} {name}: {s['result']} ({s['ms'] / 1000:.1f} s)"
                  + (f": {s['reason']}" if s["result"] == "FAIL" else ""))
        else:
            print(f"  scenario {n} {name}: MISSING")
    if "error" in res:
        print(f"FAIL: {res['error']}")
        return 1
    missing = [n for n in SCENARIOS if str(n) not in res["scenarios"]]
    if missing:
        print(f"FAIL: no result for scenario(s) {missing}")
        return 1
    if res.get("errors"):
        print("FAIL: the guest reported: " + "; ".join(res["errors"]))
        return 1
    if not res.get("bangerd_stopped"):
        print("FAIL: no BANGER-VM-BANGERD-STOPPED: bangerd, put through every scenario, was "
              "not seen to stop on SIGTERM")
        return 1
    return 0


def do_scenario(n, results_path, workdir):
    with open(results_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = None
        try:
            with open(results_path) as f:
                res = json.load(f)
        except (OSError, ValueError):
            pass
        if not res or res.get("ppid") != os.getppid():
            log("no results from this test run: booting the VM for this scenario")
            res = do_boot(results_path, workdir)
            report_boot(res)
    if "skip" in res:
        print(f"SKIP: {res['skip']}")
        return SKIP
    s = res["scenarios"].get(str(n))
    if not s:
        print(f"FAIL: scenario {n} {SCENARIOS[n]} reported nothing: "
              f"{res.get('error', 'the guest never reached it')}; console: {res['console']}")
        return 1
    print("\n".join(s["console"]))
    print(f"scenario {n} {s['name']}: {s['result']} in {s['ms'] / 1000:.1f} s "
          f"(guest init after {res.get('boot_s')} s, whole tier {res.get('tier_s')} s)")
    if s["result"] != "PASS":
        print(f"FAIL: {s['reason']}")
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["boot", "scenario"])
    ap.add_argument("n", nargs="?", type=int, choices=list(SCENARIOS))
    ap.add_argument("--results", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    if a.what == "boot":
        with open(a.results + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return report_boot(do_boot(a.results, a.workdir))
    if a.n is None:
        ap.error("scenario needs N")
    return do_scenario(a.n, a.results, a.workdir)


if __name__ == "__main__":
    sys.exit(main())
