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

vmdriver.py (which systemd/run.py uses too) fetches and caches the
packages, builds the initramfs and boots it; this file says what goes in
and what the console must show. The initramfs is rebuilt every run.

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
import json
import os
import re
import subprocess
import sys
import time

import vmdriver
from vmdriver import Skip, fail, log, skip

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
GUEST_USER = ("banger", 100, 100)


# --- initramfs --------------------------------------------------------------


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
    binaries["/usr/sbin/dmsetup"] = vmdriver.tool("dmsetup")
    binaries["/usr/sbin/losetup"] = vmdriver.tool("losetup")

    debian = vmdriver.DebianBoot(cache)
    modules = vmdriver.kernel_modules(debian.moddir, KERNEL_MODULES)
    c = vmdriver.busybox_initramfs(
        debian, modules, os.path.join(HERE, "guest", "init"),
        dirs=("run", "tmp", "srv", "root", "var/lib", "var/log", "etc", "usr/sbin", "sbin"),
        provided={os.path.basename(p) for p in binaries})
    libs = set()
    for dest, src in binaries.items():
        c.copy(src, dest, 0o755)
        libs.update(vmdriver.shared_libraries(src))
    for lib in sorted(libs):
        c.copy(os.path.realpath(lib), lib, 0o755)
    c.copy(os.path.join(HERE, "guest", "scenarios.sh"), "etc/banger-vm/scenarios.sh", 0o755)
    user, uid, gid = GUEST_USER
    c.file("etc/passwd", (f"root:x:0:0:root:/root:/bin/sh\n"
                          f"{user}:x:{uid}:{gid}:banger:/var/lib/banger:/bin/false\n"
                          f"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n").encode())
    c.file("etc/group", f"root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n".encode())
    initrd = os.path.join(workdir, "initramfs.cpio.gz")
    c.write(initrd)
    log(f"kernel {os.path.basename(debian.kernel_deb)}, busybox "
        f"{os.path.basename(debian.busybox_deb)}; initramfs {os.path.getsize(initrd) >> 10} KiB: "
        f"{len(c.entries)} entries, {len(libs)} shared libraries")
    return debian.vmlinuz, initrd


# --- booting ----------------------------------------------------------------

MARK = re.compile(r"BANGER-SCENARIO (\d+) (\S+) (START|PASS|FAIL)(?: (\d+))?(?: (.*))?$")


def boot(vmlinuz, initrd, workdir):
    """Boot, parse the console; returns the results dict."""
    guest = vmdriver.Guest(vmlinuz, initrd, workdir, memory_mib=1024, timeout_s=BOOT_TIMEOUT_S)
    res = {"scenarios": {}, "console": guest.console_path, "command": guest.cmd}
    seg = {}  # scenario -> its console lines
    current = None
    for t, line in guest.lines():
        if current is not None:
            seg[current].append(line)
        if "BANGER-VM-INIT" in line:
            res["boot_s"] = round(t, 1)
            log(f"guest init after {t:.1f} s: {line[line.index('BANGER-VM-INIT'):]}")
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
    if guest.timed_out:
        res["error"] = f"no end within {BOOT_TIMEOUT_S} s (BANGER_VM_TIMEOUT)"
    guest.finish(res)
    if "done_s" not in res and "error" not in res:
        res["error"] = f"qemu ended (status {res['qemu_status']}) before the scenarios finished"
    if "boot_s" not in res:
        res["error"] = (res.get("error", "") + "; the guest init never started. Console:\n"
                        + guest.console_tail(3000))
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
        vmdriver.require_qemu()
        for tool in ("dpkg-deb", "ldd"):
            vmdriver.tool(tool)
        cache = vmdriver.cache_dir()
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
    """Print what the boot did, scenario by scenario; what failed the boot itself, or None."""
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
        return res["error"]
    missing = [n for n in SCENARIOS if str(n) not in res["scenarios"]]
    if missing:
        return f"no result for scenario(s) {missing}"
    if res.get("errors"):
        return "the guest reported: " + "; ".join(res["errors"])
    if not res.get("bangerd_stopped"):
        return ("no BANGER-VM-BANGERD-STOPPED: bangerd, put through every scenario, was "
                "not seen to stop on SIGTERM")
    return None


def results_of_this_run(results_path, workdir):
    """The boot's results when this meson run wrote them (same parent process); otherwise
    boot now. Under the results' lock, so the scenario tests of one run share one boot."""
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
            if "skip" not in res:
                report_boot(res)
    return res


def do_scenario(n, results_path, workdir):
    res = results_of_this_run(results_path, workdir)
    if "skip" in res:
        skip(res["skip"])
    s = res["scenarios"].get(str(n))
    if not s:
        fail(f"scenario {n} {SCENARIOS[n]} reported nothing: "
             f"{res.get('error', 'the guest never reached it')}; console: {res['console']}")
    print("\n".join(s["console"]))
    print(f"scenario {n} {s['name']}: {s['result']} in {s['ms'] / 1000:.1f} s "
          f"(guest init after {res.get('boot_s')} s, whole tier {res.get('tier_s')} s)")
    if s["result"] != "PASS":
        fail(s["reason"])
    return 0


def do_boot_alone(results_path, workdir):
    with open(results_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = do_boot(results_path, workdir)
    if "skip" in res:
        skip(res["skip"])
    failure = report_boot(res)
    if failure:
        fail(failure)
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
        return do_boot_alone(a.results, a.workdir)
    if a.n is None:
        ap.error("scenario needs N")
    return do_scenario(a.n, a.results, a.workdir)


if __name__ == "__main__":
    sys.exit(main())
