#!/usr/bin/env python3
"""The hardened split-mode units under a real systemd, in a VM.

systemd is not PID 1 on the machines that build banger, so the units of
contrib/ are proven in a guest whose PID 1 is Debian's systemd:

  - a minimal Debian root (debootstrap --variant=minbase, the host's suite,
    systemd, udev, dmsetup, iproute2 and the libraries the binaries link),
    cached as a tarball in $BANGER_VM_CACHE keyed by its package list;
  - into a fresh copy of it, `meson install --destdir` of this build (the
    binaries, the units, sysusers.d, tmpfiles.d, the example config, all at
    their installed paths), the stub firecracker, and
    banger-vmtest.service + scenario.sh; the two sockets are enabled with
    `systemctl --root enable`, as a package would;
  - an ext4 image of it (`mkfs.ext4 -d`), booted with Debian's kernel and
    a tiny busybox initramfs (init: loads virtio, ext4, dm, loop and tun,
    mounts /dev/vda, switch_root to /sbin/init); ../vmdriver.py, the VM
    tests' one driver, fetches the kernel, builds the initramfs and boots.

The guest's scenario (scenario.sh) prints BANGER-SYSTEMD lines; this test
passes only on `BANGER-SYSTEMD PASS` with no `BANGER-SYSTEMD FAIL` line
anywhere (a later PASS never makes up for an earlier FAIL). Exit 77 (and
why) only when this machine cannot run it at all: qemu not installed (the
reason tests/expected-tests.txt declares), or not root. A Debian mirror or
kernel package out of reach, or a missing debootstrap, mkfs.ext4 or other
tool (./dev deps installs them), is a failure.

  run.py --workdir DIR
Environment: BANGER_BUILD_ROOT, BANGER_INSTALL_* (the layout, from meson),
BANGER_STUB_FIRECRACKER; BANGER_VM_CACHE (see vmdriver.py), BANGER_VM_MIRROR
(default: the host's apt source for its suite), BANGER_VM_SYSTEMD_TIMEOUT
(default 600 s, the boot and the scenario).
"""
import argparse
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import vmdriver  # noqa: E402  (tests/vm/vmdriver.py: packages, kernel, initramfs, qemu)
from vmdriver import Skip, fail, run, skip, tool  # noqa: E402

TIMEOUT_S = int(os.environ.get("BANGER_VM_SYSTEMD_TIMEOUT", "600"))
# Modules the initramfs loads: the root disk, its file system (crc32c is
# ext4's soft dependency), and what the scenario needs from the kernel.
MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4",
           "dm_mod", "dm_snapshot", "loop", "tun", "unix_diag"]
# The guest's own packages, besides the libraries the binaries link.
ROOT_PACKAGES = ["systemd", "systemd-sysv", "udev", "dbus", "dmsetup", "iproute2",
                 "util-linux", "kmod"]
# Units of the minimal root that only get in the way of a serial console test.
MASKED = ["serial-getty@ttyS0.service", "getty@tty1.service", "apt-daily.timer",
          "apt-daily-upgrade.timer", "systemd-timesyncd.service"]
MARK = re.compile(r"BANGER-SYSTEMD (STEP|PASS|FAIL|START)\b ?(.*)$")


log = functools.partial(vmdriver.log, who="vm-systemd")


def layout(name):
    value = os.environ.get("BANGER_INSTALL_" + name.upper())
    if not value:
        raise RuntimeError(f"BANGER_INSTALL_{name.upper()} is not set (run through meson test)")
    return value


# --- the Debian root -------------------------------------------------------------------


def host_suite():
    with open("/etc/os-release") as f:
        m = re.search(r"^VERSION_CODENAME=\"?(\w+)", f.read(), re.M)
    if not m:
        raise RuntimeError("/etc/os-release names no VERSION_CODENAME: not Debian?")
    return m.group(1)


def apt_mirror(suite):
    """The host's apt source for suite (deb822 or one-line), e.g. http://deb.debian.org/debian."""
    if os.environ.get("BANGER_VM_MIRROR"):
        return os.environ["BANGER_VM_MIRROR"]
    files = ["/etc/apt/sources.list"] + sorted(
        os.path.join("/etc/apt/sources.list.d", f)
        for f in os.listdir("/etc/apt/sources.list.d") if f.endswith((".list", ".sources")))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M | re.I)
                suites = re.search(r"^Suites:\s*(.*)$", stanza, re.M | re.I)
                if uris and suites and suite in suites.group(1).split():
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
                if m and m.group(2) == suite:
                    return m.group(1).rstrip("/")
    raise RuntimeError(f"no apt source for {suite} in /etc/apt (set BANGER_VM_MIRROR)")


def library_packages(binaries):
    """The Debian packages of every library ldd names for binaries (usrmerge-aware)."""
    pkgs = set()
    for lib in sorted({lib for b in binaries for lib in vmdriver.shared_libraries(b)}):
        real = os.path.realpath(lib)
        candidates = [lib, real]
        for p in (lib, real):
            if p.startswith("/usr/"):
                candidates.append(p[len("/usr"):])
            else:
                candidates.append("/usr" + p)
        for c in candidates:
            r = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True)
            if r.returncode == 0:
                pkgs.add(r.stdout.split(":")[0].split(",")[0].strip())
                break
        else:
            raise RuntimeError(f"{lib}: no Debian package owns it (dpkg-query -S)")
    return sorted(pkgs)


def rootfs_tarball(cache, suite, mirror, packages):
    """The cached debootstrap root for (suite, mirror, packages); made when missing."""
    key = hashlib.sha256(f"{suite} {mirror} minbase {' '.join(packages)}".encode()).hexdigest()
    tarball = os.path.join(cache, f"rootfs-{suite}-{key[:16]}.tar")
    with open(os.path.join(cache, ".rootfs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(tarball):
            return tarball, None
        debootstrap = tool("debootstrap")
        try:
            urllib.request.urlopen(f"{mirror}/dists/{suite}/Release", timeout=30).close()
        except OSError as e:
            raise RuntimeError(f"the Debian mirror {mirror} is out of reach ({e}): "
                               "cannot debootstrap")
        for old in os.listdir(cache):  # one root per suite: a new package list replaces it
            if old.startswith(f"rootfs-{suite}-") and old.endswith(".tar"):
                os.unlink(os.path.join(cache, old))
        tmp = os.path.join(cache, f"rootfs-tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [debootstrap, "--variant=minbase", "--include=" + ",".join(packages),
               suite, tmp, mirror]
        log("$ " + " ".join(cmd))
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=900)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("debootstrap did not finish within 900 s")
        if p.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"debootstrap failed ({p.returncode}):\n{p.stdout[-3000:]}")
        took = time.monotonic() - t0
        shutil.rmtree(os.path.join(tmp, "var/cache/apt/archives"), ignore_errors=True)
        os.makedirs(os.path.join(tmp, "var/cache/apt/archives/partial"))
        run(["tar", "-C", tmp, "--numeric-owner", "--xattrs", "-cf", tarball + ".tmp", "."])
        os.replace(tarball + ".tmp", tarball)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"debootstrap (cold): {took:.1f} s; cached as {tarball} "
            f"({os.path.getsize(tarball) >> 20} MiB)")
        return tarball, took


# --- the guest's disk ------------------------------------------------------------------


def meson_install(stage):
    build_root = os.environ.get("BANGER_BUILD_ROOT")
    if not build_root:
        raise RuntimeError("BANGER_BUILD_ROOT is not set (run through meson test)")
    # The same lock as tests/install: meson install writes its log in the build dir.
    with open(os.path.join(build_root, "meson-private", "banger-install-test.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(["meson", "install", "-C", build_root, "--no-rebuild", "--quiet",
                            "--destdir", stage], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"meson install --destdir failed ({r.returncode}):\n{r.stdout}")


def installed(name):
    """Installed path of the three programs, from meson's layout."""
    prefix = layout("prefix")
    return {"bangerd": os.path.join(prefix, layout("sbindir"), "bangerd"),
            "bangerctl": os.path.join(prefix, layout("bindir"), "bangerctl"),
            "banger-privhelper": os.path.join(prefix, layout("libexecdir"),
                                              "banger-privhelper")}[name]


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def populate(root, stage):
    """This build, installed, plus the test's own unit and script, into the root."""
    run(["cp", "-a", stage + "/.", root + "/"])
    unitdir = layout("unitdir")
    for u in ("bangerd.socket", "bangerd.service", "banger-privhelper.socket",
              "banger-privhelper@.service"):
        if not os.path.exists(os.path.join(root, unitdir.lstrip("/"), u)):
            raise RuntimeError(f"meson install put no {u} in {unitdir}")
    stub = os.environ.get("BANGER_STUB_FIRECRACKER")
    if not stub or not os.path.exists(stub):
        raise RuntimeError(f"no stub firecracker (BANGER_STUB_FIRECRACKER={stub!r})")
    shutil.copy(stub, os.path.join(root, "usr/local/bin/firecracker"))
    os.chmod(os.path.join(root, "usr/local/bin/firecracker"), 0o755)
    script = os.path.join(root, "usr/local/lib/banger-vmtest/scenario.sh")
    os.makedirs(os.path.dirname(script), exist_ok=True)
    shutil.copy(os.path.join(HERE, "scenario.sh"), script)
    os.chmod(script, 0o755)
    shutil.copy(os.path.join(HERE, "banger-vmtest.service"),
                os.path.join(root, "etc/systemd/system/banger-vmtest.service"))
    write(os.path.join(root, "etc/banger-vmtest/env"),
          f"BANGERCTL={installed('bangerctl')}\nSTUB=/usr/local/bin/firecracker\n")
    write(os.path.join(root, "etc/hostname"), "banger-vm\n")
    for unit in MASKED:
        link = os.path.join(root, "etc/systemd/system", unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)
    # As a package's postinst would: the sockets, not bangerd.service (that
    # would start bangerd at boot; the point is socket activation).
    run(["systemctl", f"--root={root}", "enable", "bangerd.socket", "banger-privhelper.socket",
         "banger-vmtest.service"])
    for s in ("bangerd.socket", "banger-privhelper.socket"):
        if not os.path.lexists(os.path.join(root, "etc/systemd/system/sockets.target.wants", s)):
            raise RuntimeError(f"systemctl --root enable did not enable {s}")


def build_image(root, image):
    if os.path.exists(image):
        os.unlink(image)
    run([tool("mkfs.ext4"), "-q", "-F", "-L", "bangerroot", "-d", root, image, "1536M"])


def build_initramfs(workdir, cache):
    """Debian's kernel and a busybox initramfs that mounts /dev/vda and switches to systemd."""
    debian = vmdriver.DebianBoot(cache)
    modules = vmdriver.kernel_modules(debian.moddir, MODULES)
    c = vmdriver.busybox_initramfs(debian, modules, os.path.join(HERE, "init"), dirs=("newroot",))
    initrd = os.path.join(workdir, "initramfs.cpio.gz")
    c.write(initrd)
    log(f"kernel {os.path.basename(debian.kernel_deb)}; "
        f"initramfs {os.path.getsize(initrd) >> 10} KiB")
    return debian.vmlinuz, initrd


# --- booting ---------------------------------------------------------------------------


def boot(vmlinuz, initrd, image, workdir):
    guest = vmdriver.Guest(vmlinuz, initrd, workdir, memory_mib=1536, timeout_s=TIMEOUT_S,
                           extra=["-drive", f"file={image},format=raw,if=virtio"],
                           append="rw systemd.show_status=false systemd.unit=multi-user.target",
                           who="vm-systemd")
    res = {"steps": [], "console": guest.console_path, "guest": []}
    in_guest = False
    for t, line in guest.lines():
        if "BANGER-SYSTEMD-INITRAMFS" in line:
            res["initramfs_s"] = round(t, 1)
        elif "BANGER-SYSTEMD-SWITCH-ROOT" in line:
            res["switch_root_s"] = round(t, 1)
        if in_guest:
            res["guest"].append(line)
        m = MARK.search(line)
        if not m:
            continue
        what, rest = m.group(1), m.group(2)
        if what == "START":
            in_guest = True
            res["guest"].append(line)
            res["systemd_s"] = round(t, 1)
            log(f"the test unit started after {t:.1f} s: {rest}")
        elif what == "STEP":
            res["steps"].append(rest)
            log(f"  ok: {rest}")
        elif what == "PASS":
            res["passed"] = True
            res["scenario_ms"] = int(rest.split()[0]) if rest.split() else 0
            res.setdefault("verdict_s", round(t, 1))
        elif what == "FAIL":
            # Every FAIL counts, whatever comes after it.
            res.setdefault("failures", []).append(rest)
            res.setdefault("verdict_s", round(t, 1))
    if guest.timed_out:
        res["error"] = f"no verdict within {TIMEOUT_S} s (BANGER_VM_SYSTEMD_TIMEOUT)"
    guest.finish(res)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    t_all = time.monotonic()
    times = {}
    workdir = os.path.abspath(a.workdir)
    try:
        if os.geteuid() != 0:
            raise Skip("needs root: debootstrap, and a root file system owned by root")
        vmdriver.require_qemu()
        for t in ("debootstrap", "mkfs.ext4", "dpkg-deb", "dpkg-query", "ldd", "tar", "meson",
                  "systemctl"):
            tool(t)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        cache = vmdriver.cache_dir()
        suite = host_suite()
        mirror = apt_mirror(suite)

        t = time.monotonic()
        stage = os.path.join(workdir, "stage")
        meson_install(stage)
        binaries = [os.path.join(stage, installed(n).lstrip("/"))
                    for n in ("bangerd", "bangerctl", "banger-privhelper")]
        packages = sorted(set(ROOT_PACKAGES) | set(library_packages(binaries)))
        times["install"] = time.monotonic() - t

        t = time.monotonic()
        tarball, cold = rootfs_tarball(cache, suite, mirror, packages)
        if cold is not None:
            times["debootstrap (cold)"] = cold
        root = os.path.join(workdir, "root")
        os.makedirs(root)
        t1 = time.monotonic()
        run(["tar", "-C", root, "--numeric-owner", "--xattrs", "-xpf", tarball])
        times["root from the cached tarball"] = time.monotonic() - t1
        populate(root, stage)
        image = os.path.join(workdir, "root.ext4")
        t1 = time.monotonic()
        build_image(root, image)
        times["mkfs.ext4 -d"] = time.monotonic() - t1
        shutil.rmtree(root)
        shutil.rmtree(stage)
        log(f"suite {suite} from {mirror}; packages: {' '.join(packages)}")

        t = time.monotonic()
        vmlinuz, initrd = build_initramfs(workdir, cache)
        times["kernel + initramfs"] = time.monotonic() - t
        res = boot(vmlinuz, initrd, image, workdir)
    except Skip as e:
        skip(str(e))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        if isinstance(e, subprocess.CalledProcessError):
            print(e.stdout, e.stderr)
        fail(f"building the systemd VM failed: {e}")

    times["qemu"] = res["total_s"]
    print("---- guest ----")
    print("\n".join(res["guest"]) if res["guest"] else "(the test unit never started)")
    print("---- end of guest ----")
    print("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print(f"guest: initramfs after {res.get('initramfs_s', '-')} s, switch_root after "
          f"{res.get('switch_root_s', '-')} s, test unit after {res.get('systemd_s', '-')} s, "
          f"verdict after {res.get('verdict_s', '-')} s (scenario "
          f"{res.get('scenario_ms', 0) / 1000:.1f} s); qemu exited {res['qemu_status']}; "
          f"whole test {time.monotonic() - t_all:.1f} s; console: {res['console']}")
    failure = verdict(res)
    if failure:
        fail(failure)
    os.unlink(image)  # 1.5 GiB sparse: kept only when something went wrong
    print(f"PASS: {len(res['steps'])} steps")
    return 0


def verdict(res):
    """What failed the test in boot()'s results, or None when it passed: a PASS line, and no
    FAIL line anywhere before or after it, no guest error, qemu not cut off."""
    if res.get("failures"):
        return "; ".join(res["failures"])
    if res.get("errors"):
        return "the guest reported: " + "; ".join(res["errors"])
    if res.get("passed") and not res.get("error"):
        return None
    with open(res["console"]) as f:
        tail = f.read()[-4000:]
    return f"{res.get('error', 'qemu ended without a verdict')}; console tail:\n{tail}"


if __name__ == "__main__":
    sys.exit(main())
