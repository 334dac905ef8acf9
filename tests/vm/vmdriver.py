"""The one driver of banger's VM tests: Debian's kernel booted under qemu (TCG).

Both VM tests use it: vmtier.py (the scenarios in a busybox initramfs) and
systemd/run.py (the units under a real systemd, on a Debian root disk). It
owns what a VM test has to do whatever it proves:

  - fetch Debian's packages (the kernel, busybox-static) with `apt-get
    download` into the cache ($BANGER_VM_CACHE, else /var/cache/banger-vm),
    keyed by the file name apt gives them (package, version, architecture),
    checked against the SHA256 apt names, extracted once;
  - pick the kernel's modules a test names, with what they depend on, in
    load order;
  - build a newc initramfs in memory (Cpio; busybox_initramfs() lays out
    what both tests' inits need: busybox and its applets, /dev/console, the
    modules and their load order in /etc/banger-vm/modules);
  - boot it (Guest) with a serial console, yield the console line by line
    (each also written, timestamped, to console.log), record the guest's
    BANGER-VM-ERROR and kernel panic lines, end qemu at the deadline.

What a test checks from the console is the test's own. A tier that cannot
be built (a package that cannot be downloaded or does not match, a missing
tool) raises RuntimeError: a failure. Skip is raised for one fact only, qemu
not installed (the reason tests/expected-tests.txt declares for the tier).
"""
import fcntl
import glob
import gzip
import hashlib
import io
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import fail, skip, wait_or_kill  # noqa: E402,F401  (the tests' fixtures)

QEMU = "qemu-system-x86_64"
# Every boot: no network, no reboot (a panic or poweroff ends qemu), the serial console.
QEMU_BASE = ["-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-nographic",
             "-no-reboot", "-nic", "none"]
KERNEL_ARGS = "console=ttyS0 panic=-1 quiet loglevel=3"
QEMU_EXIT_WAIT_S = 30  # for qemu to finish powering off after the guest's last line


class Skip(Exception):
    """This machine cannot run the tier: exit 77. Raised for one fact only, qemu not
    installed; anything else that stops the tier (a download, a checksum, another tool)
    is a failure, since this machine reaches Debian's packages and ./dev deps installs
    the tools."""


def require_qemu():
    if not shutil.which(QEMU):
        raise Skip(f"{QEMU} is not installed (apt-get install qemu-system-x86; ./dev deps does)")


def log(msg, who="vm"):
    print(f"{who}: {msg}", flush=True)


def run(args, **kw):
    """Run a host command; its stdout. A failure raises (CalledProcessError), for the test
    to record as the tier's failure, with what it had seen so far."""
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def tool(name):
    """The path of a host tool, searched in the sbin directories too."""
    path = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise RuntimeError(f"{name} not found on this host (./dev deps installs it)")
    return path


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


class DebianBoot:
    """Debian's kernel, its modules directory and busybox-static, fetched and extracted.
    Two build dirs may run a VM test at once: one of them fetches and extracts at a time
    (the cache's lock)."""

    def __init__(self, cache):
        with open(os.path.join(cache, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.kernel_deb = kernel_package(cache)
            self.busybox_deb = fetch("busybox-static", cache)
            kroot = extract(self.kernel_deb, cache)
            bbroot = extract(self.busybox_deb, cache)
        vmlinuz = glob.glob(os.path.join(kroot, "boot", "vmlinuz-*"))
        moddirs = glob.glob(os.path.join(kroot, "lib", "modules", "*"))
        if len(vmlinuz) != 1 or len(moddirs) != 1:
            raise RuntimeError(f"{self.kernel_deb}: want one vmlinuz and one modules dir, "
                               f"found {vmlinuz} and {moddirs}")
        self.vmlinuz, self.moddir = vmlinuz[0], moddirs[0]
        self.busybox = os.path.join(bbroot, "bin", "busybox")


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


def kernel_modules(moddir, wanted):
    """[(name, bytes)] in load order for the modules named in wanted and what they depend
    on; those built into the kernel are left out."""
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

    for name in wanted:
        visit(name, [])
    log(f"modules (load order): {', '.join(n for n, _ in order) or 'none'}; built in: "
        f"{', '.join(n for n in wanted if n in builtin) or 'none'}")
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


def busybox_initramfs(debian, modules, init, dirs=(), provided=()):
    """A Cpio with what every test's init needs: dirs, /dev/console and /dev/null, busybox
    with a link for each applet (except those named in provided: the test puts real
    programs there), the modules as /lib/modules/NAME.ko and their load order in
    /etc/banger-vm/modules, and init (a file of the test's) as /init."""
    c = Cpio()
    for d in ("dev", "proc", "sys", *dirs):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.copy(debian.busybox, "bin/busybox", 0o755)
    for applet in run([debian.busybox, "--list"]).split():
        if applet not in provided and applet != "busybox":
            c.symlink(f"bin/{applet}", "busybox")
    for name, ko in modules:
        c.file(f"lib/modules/{name}.ko", ko)
    c.file("etc/banger-vm/modules", "".join(f"{n}\n" for n, _ in modules).encode())
    c.copy(init, "init", 0o755)
    return c


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


# --- booting ----------------------------------------------------------------


class Guest:
    """One boot: qemu with the kernel, the initramfs and any extra qemu arguments, its
    serial console read line by line until qemu ends or timeout_s passes.

    lines() yields (seconds since the start, line) and writes each line, timestamped, to
    console_path; a BANGER-VM-ERROR or "Kernel panic" line is also kept in errors (and
    logged). At the deadline timed_out is set and qemu is killed. finish() then waits for
    qemu (bounded) and puts its status and the boot's time into a results dict."""

    def __init__(self, vmlinuz, initrd, workdir, memory_mib, timeout_s, append="", extra=(),
                 who="vm"):
        self.cmd = [QEMU, *QEMU_BASE, "-m", str(memory_mib), "-kernel", vmlinuz,
                    "-initrd", initrd, *extra, "-append", f"{KERNEL_ARGS} {append}".strip()]
        self.console_path = os.path.join(workdir, "console.log")
        self.timeout_s = timeout_s
        self.who = who
        self.errors = []
        self.timed_out = False
        log("$ " + " ".join(self.cmd), who)
        self.start = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def lines(self):
        fd = self.proc.stdout.fileno()
        deadline = self.start + self.timeout_s
        pending = b""
        with open(self.console_path, "w") as console:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = True
                    self.proc.kill()
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
                    if "BANGER-VM-ERROR" in line or "Kernel panic" in line:
                        log(line.strip(), self.who)
                        self.errors.append(line.strip())
                    yield t, line

    def finish(self, res):
        """Let qemu finish powering off (bounded), then record its status and the total
        time in res."""
        wait_or_kill(self.proc, QEMU_EXIT_WAIT_S)
        self.proc.stdout.close()
        res["qemu_status"] = self.proc.returncode
        res["total_s"] = round(time.monotonic() - self.start, 1)
        if self.errors:
            res["errors"] = self.errors

    def console_tail(self, size):
        with open(self.console_path) as f:
            return f.read()[-size:]
