#!/usr/bin/env python3
"""cmd/fcmanager-example against the real pair, as the README runs it.

bangerd and its helper start as tests/integration/bangertest.py starts them;
the example creates a real tap and a real loop, Registers, starts the stub
firecracker, SetHandles, stops it and watches bangerd tear it down, twice
under one id. Checks its account of that, bangerd's record, and with the
kernel's own tools that nothing is left.

usage: test_example.py FCMANAGER_EXAMPLE
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
from bangertest import (IFACE, STUB, Daemon, check, link_exists, loops_on,  # noqa: E402
                        require_root, skip)


def main():
    require_root()
    if not os.path.exists("/dev/net/tun"):
        skip("no /dev/net/tun: cannot create tap devices here")
    d = Daemon()
    tap = f"bgtex{os.getpid() % 100000}"
    image = os.path.join(d.loop_root, "demo.img")
    try:
        r = subprocess.run([sys.argv[1], "--socket", d.socket, "--id", "demo",
                            "--api-sock", os.path.join(d.api_root, "demo", "api.sock"),
                            "--tap", tap, "--image", image, "--firecracker", STUB,
                            "--runs", "2", "--run-for", "0s"],
                           capture_output=True, text=True, timeout=60)
        print(r.stdout, r.stderr, sep="")
        check(r.returncode == 0, f"fcmanager-example exited {r.returncode}")
        for run in (1, 2):
            for what in ("registered demo (starting)", "is alive (state running",
                         "event exited", "event torn_down", f"tap {tap} gone: true"):
                check(f"run {run}: " in r.stdout and
                      any(line.startswith(f"run {run}: ") and what in line
                          for line in r.stdout.splitlines()), f"run {run} did not say {what!r}")
        vms = d.client().call(IFACE + "List")["vms"]
        check(len(vms) == 1 and vms[0]["id"] == "demo" and vms[0]["state"] == "stopped"
              and "handles" not in vms[0], f"the record after two runs: {vms}")
        check(not link_exists(tap), f"tap {tap} left behind")
        loops = loops_on(image)
        check(loops == [], f"loops left on {image}: {loops}")
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
        d.finish()


if __name__ == "__main__":
    main()
