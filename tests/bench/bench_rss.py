#!/usr/bin/env python3
"""bangerd's memory per registered VM, at 10,000 VMs, against the size of its records on disk.

bangerd keeps every VM in memory (it answers reads from its cache), so its
resident memory grows with the number of VMs; the issue asks for at most
about 2 KiB per VM. Starts bangerd, reads VmRSS once it has answered a
first call, registers 10,000 VMs (ids v00000..v09999, each with a planned
tap, two loop files and a DM name, as a VM manager would) over one
connection, reads VmRSS again, then starts 500 stub firecrackers and calls
SetHandles for the first 500 VMs (10,000 live stubs would measure the
machine, not bangerd), and reads VmRSS a third time. The baseline for
context is what the same records take on disk: the sum of st_size of
every vm.json (and handles.json), per VM. Also reports how fast the
10,000 Register calls went (each is durable, fsynced, before it returns).
Checks GetStatus's counts afterwards; never asserts a figure.

usage: bench_rss.py [--vms N] [--running N]
"""
import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import IFACE, Bench, add_json_option, check, record, rss_kib, status_of  # noqa: E402


def vm_id(i):
    return f"v{i:05d}"


def planned_of(d, vid):
    return {"tap": f"bgt-{vid}",
            "loop_files": [os.path.join(d.loop_root, vid, "rootfs.ext4"),
                           os.path.join(d.loop_root, vid, "cow.img")],
            "dm": [f"bangertest-{vid}"]}


def rss_anon_kib(pid):
    return int(status_of(pid)["RssAnon"].split()[0])


def register_all(d, c, count, checkpoints):
    """Register count VMs; returns the seconds it took. bangerd's VmRSS is appended to
    checkpoints as (VMs registered, KiB) at every tenth of count.

    on_exit keep: the resources named are made up, and nothing must try to tear them down.
    """
    start = time.monotonic()
    for i in range(count):
        vid = vm_id(i)
        sock = os.path.join(d.api_root, vid, "api.sock")
        c.call(IFACE + "Register", {"id": vid, "api_sock": sock, "on_exit": "keep",
                                    "planned": planned_of(d, vid)})
        if (i + 1) % max(count // 10, 1) == 0 or i + 1 == count:
            checkpoints.append((i + 1, rss_kib(d.proc.pid)))
    return time.monotonic() - start


def set_handles_first(bench, d, c, count):
    socks = [os.path.join(d.api_root, vm_id(i), "api.sock") for i in range(count)]
    stubs = bench.stubs_for(socks)
    # Two real loops and a real tap that every VM names: SetHandles takes only attached
    # loops and existing taps, and the handles' size is the same as with their own.
    loops = [bench.loop(d, "l0.img"), bench.loop(d, "l1.img")]
    tap = bench.tap("rss")
    for i, stub in enumerate(stubs):
        vid = vm_id(i)
        reply = c.call(IFACE + "SetHandles", {
            "id": vid, "pid": stub.pid, "tap": tap,
            "loops": loops, "dm": [f"bangertest-{vid}"]})
        check(reply["persisted"] is True and reply["vm"]["handles"]["pid"] == stub.pid,
              f"SetHandles {vid}: {reply}")


def disk_bytes(d, name):
    """(files, sum of st_size, sum of allocated bytes) of every VM's file called name."""
    files = size = allocated = 0
    root = os.path.join(d.state, "vms")
    for vid in os.listdir(root):
        try:
            st = os.stat(os.path.join(root, vid, name))
        except FileNotFoundError:
            continue
        files += 1
        size += st.st_size
        allocated += st.st_blocks * 512
    return files, size, allocated


def report(args, rss, anon, seconds, d):
    nvm, nrun = args.vms, args.running
    per_vm = (rss[1] - rss[0]) * 1024 / nvm
    print(f"Register x{nvm}: {seconds:.1f} s, {nvm / seconds:.0f} calls/s "
          f"(one connection, closed loop, each call fsynced)")
    print(f"bangerd VmRSS: {rss[0]} KiB ready, {rss[1]} KiB after {nvm} Register, "
          f"{rss[2]} KiB after {nrun} SetHandles (RssAnon {anon[0]} -> {anon[1]} -> {anon[2]} KiB)")
    print(f"RSS per registered VM: ({rss[1]} - {rss[0]}) KiB / {nvm} = {per_vm:.0f} bytes")
    print(f"RSS per VM with handles, on top: ({rss[2]} - {rss[1]}) KiB / {nrun} = "
          f"{(rss[2] - rss[1]) * 1024 / nrun:.0f} bytes")
    print(f"RSS per VM overall: ({rss[2]} - {rss[0]}) KiB / {nvm} = "
          f"{(rss[2] - rss[0]) * 1024 / nvm:.0f} bytes")
    files, size, alloc = disk_bytes(d, "vm.json")
    json_bytes = size / files
    print(f"on disk, vm.json: {files} files, {size / files:.0f} bytes per VM "
          f"(st_size; {alloc / files:.0f} bytes allocated); ratio RSS/vm.json "
          f"{per_vm / (size / files):.2f}x")
    files, size, alloc = disk_bytes(d, "handles.json")
    print(f"on disk, handles.json: {files} files, {size / max(files, 1):.0f} bytes each")
    print("issue target (reported, never asserted): <= 2 KiB (2048 bytes) per VM")
    return per_vm, json_bytes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--running", type=int, default=500)
    add_json_option(p)
    args = p.parse_args()
    check(0 < args.running <= args.vms <= 100000, "need 0 < --running <= --vms <= 100000")
    with Bench() as bench:
        d = bench.start_daemon()
        pid = d.proc.pid
        c = d.client()
        c.call(IFACE + "GetStatus")  # first call served: buffers and code paths in place
        rss, anon = [rss_kib(pid)], [rss_anon_kib(pid)]
        helper = d.helper_pid()
        helper_rss0 = rss_kib(helper)
        checkpoints = [(0, rss[0])]
        seconds = register_all(d, c, args.vms, checkpoints)
        rss.append(rss_kib(pid))
        anon.append(rss_anon_kib(pid))
        set_handles_first(bench, d, c, args.running)
        rss.append(rss_kib(pid))
        anon.append(rss_anon_kib(pid))
        counts = c.call(IFACE + "GetStatus")["counts"]
        check(counts["vms"] == args.vms and counts["running"] == args.running,
              f"GetStatus counts {counts}, want {args.vms} VMs, {args.running} running")
        c.close()
        per_vm, json_bytes = report(args, rss, anon, seconds, d)
        record(args.json, "rss", vms=args.vms, running=args.running, rss_kib=rss,
               bytes_per_vm=per_vm, bytes_per_running_vm=(rss[2] - rss[1]) * 1024 / args.running,
               vm_json_bytes=json_bytes, checkpoints=checkpoints)
        print(f"helper VmRSS {helper_rss0} KiB before, {rss_kib(helper)} KiB after "
              f"(it keeps no per-VM state)")


if __name__ == "__main__":
    main()
