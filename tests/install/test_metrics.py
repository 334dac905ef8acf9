#!/usr/bin/env python3
"""bangerd's metrics, as node_exporter serves them from the installed timer's service.

The current build is installed into a throw-away DESTDIR; a real bangerd
(bangertest.Daemon: root dropping to the test user, its helper, real stub
firecrackers, a real bridge) goes through a known sequence: three VMs, one
firecracker exit (its teardown finds its tap absent), one teardown refused
(a "tap" that is a bridge). Then the ExecStart= line of the installed
banger-metrics.service runs once, as systemd would run it (the installed
bangerctl, its own arguments; only the textfile path and the socket are
this test's), and Debian's prometheus-node-exporter, on 127.0.0.1 and a
free port with the textfile collector alone, reads the file: it parses it
with Prometheus' own parser and refuses a malformed one
(node_textfile_scrape_error 1). The test scrapes /metrics and finds the
banger series with the values the sequence must give. Once bangerd is
gone, the same command leaves banger_up 0 and exits 3.

systemd's sandboxing of the unit is not applied here (this machine's PID 1
is not systemd): systemd-analyze verify and security check the unit
(install-verify, install-security-metrics).
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from bangertest import (IFACE, Daemon, Stub, check, fail, require_root, skip,  # noqa: E402
                        wait_or_kill)
from test_install import Install, exec_start, flag_values, layout, read_unit, unit_value  # noqa: E402

NODE_EXPORTER = "prometheus-node-exporter"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def free_port():
    """A port nobody listens on now (the kernel's pick); node_exporter binds it next."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeExporter:
    """prometheus-node-exporter on 127.0.0.1:PORT, the textfile collector alone."""

    def __init__(self, textfile_dir):
        exe = shutil.which(NODE_EXPORTER)
        if not exe:
            skip(f"{NODE_EXPORTER} is not installed (Debian package prometheus-node-exporter)")
        for _ in range(5):  # another process may take the port between our look and its bind
            self.port = free_port()
            self.proc = subprocess.Popen(
                [exe, f"--web.listen-address=127.0.0.1:{self.port}",
                 "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={textfile_dir}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self.wait_listening(10):
                return
            err = self.stop()
            if "address already in use" not in err:
                fail(f"node_exporter did not start: {err}")
        fail("node_exporter found no free port in 5 tries")

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.02)
        return False

    def scrape(self):
        """{(name, frozenset(labels.items())): value} of every sample on /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        samples = {}
        pattern = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = pattern.match(line)
            check(m, f"node_exporter served a line that is no sample: {line!r}")
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                     m.group(2) or ""))
            samples[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
        return samples

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            wait_or_kill(self.proc, 10)
        return self.proc.stderr.read().decode(errors="replace")


def value(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    check(key in samples, f"node_exporter has no {name}{labels or ''}; banger series: "
          f"{sorted(k[0] for k in samples if k[0].startswith('banger_'))}")
    return samples[key]


def unit_command(inst, socket_path, output):
    """The installed service's ExecStart=, with the DESTDIR's bangerctl, this test's socket
    and output; everything the unit says is checked first."""
    unit = read_unit(inst.unit("banger-metrics.service"))
    timer = read_unit(inst.unit("banger-metrics.timer"))
    check(unit_value(unit, "Service", "Type") == "oneshot", "the service is not a oneshot")
    check(unit_value(timer, "Timer", "OnUnitActiveSec"), "the timer does not repeat")
    argv = exec_start(unit)
    bangerctl = os.path.join(layout("prefix"), layout("bindir"), "bangerctl")
    check(argv[0] == bangerctl, f"ExecStart= runs {argv[0]}, not the installed {bangerctl}")
    check("metrics" in argv, f"ExecStart= does not run bangerctl metrics: {argv}")
    want_file = os.path.join(TEXTFILE_DIR, "banger.prom")
    check(flag_values(argv, "--output") == [want_file], f"--output is not {want_file}: {argv}")
    check(flag_values(argv, "--socket") == ["/run/banger/bangerd.sock"], f"--socket: {argv}")
    check(unit_value(unit, "Service", "ReadWritePaths") == TEXTFILE_DIR,
          "ReadWritePaths= is not the textfile directory")
    check(unit_value(unit, "Unit", "ConditionPathIsDirectory") == TEXTFILE_DIR,
          "the condition is not the textfile directory")
    check(unit_value(unit, "Service", "CapabilityBoundingSet") == "", "capabilities kept")
    swap = {want_file: output, "/run/banger/bangerd.sock": socket_path}
    return [inst.path(bangerctl)] + [swap.get(a, a) for a in argv[1:]]


def known_sequence(d, bridge):
    """3 VMs: m1 exits (tap absent at teardown), m2 runs, m3's teardown is refused."""
    c = d.client()
    watch = d.client().watch()
    sock = {v: os.path.join(d.api_root, v, "api.sock") for v in ("m1", "m2", "m3")}
    gone_tap = f"bgtg{os.getpid() % 100000}"
    c.call(IFACE + "Register", {"id": "m1", "api_sock": sock["m1"]})
    c.call(IFACE + "Register", {"id": "m2", "api_sock": sock["m2"], "on_exit": "keep"})
    c.call(IFACE + "Register", {"id": "m3", "api_sock": sock["m3"], "planned": {"tap": bridge}})
    s1, s2 = Stub(sock["m1"]), Stub(sock["m2"])
    # A real tap (SetHandles records its ifindex), gone before m1's teardown: absent there.
    subprocess.run(["ip", "tuntap", "add", "dev", gone_tap, "mode", "tap"], check=True)
    try:
        c.call(IFACE + "SetHandles", {"id": "m1", "pid": s1.pid, "tap": gone_tap})
    finally:
        subprocess.run(["ip", "link", "del", gone_tap], check=True)
    c.call(IFACE + "SetHandles", {"id": "m2", "pid": s2.pid})
    s1.kill()
    kinds = []
    while "torn_down" not in kinds and "teardown_failed" not in kinds:
        e = watch.next_event()  # bounded by the client's 10 s timeout
        if e.get("id") == "m1":
            kinds.append(e["kind"])
    check(kinds == ["registered", "handles_set", "exited", "torn_down"], f"m1's events: {kinds}")
    results = c.call(IFACE + "Teardown", {"id": "m3"})["results"]
    check([(r["kind"], r["name"], r["status"]) for r in results] == [("tap", bridge, "refused")],
          f"m3's teardown: {results}")
    watch.close()
    c.close()
    return s2


def case_node_exporter():
    require_root()
    if not shutil.which("ip"):
        skip("ip is not installed (Debian package iproute2)")
    textfile_dir = tempfile.mkdtemp(prefix="banger-test-textfile-")
    os.chmod(textfile_dir, 0o755)
    output = os.path.join(textfile_dir, "banger.prom")
    bridge = f"bgtb{os.getpid() % 100000}"
    inst = Install()
    d = exporter = s2 = None
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        d = Daemon()
        s2 = known_sequence(d, bridge)
        command = unit_command(inst, d.socket, output)
        print("$ " + " ".join(command))
        r = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 0 and r.stdout == "" and r.stderr == "",
              f"the unit's command: exit {r.returncode} {r.stdout!r} {r.stderr!r}")
        check(os.stat(output).st_mode & 0o777 == 0o644, "banger.prom is not 0644")
        check(os.listdir(textfile_dir) == ["banger.prom"], f"left behind: {os.listdir(textfile_dir)}")

        exporter = NodeExporter(textfile_dir)
        got = exporter.scrape()
        check(value(got, "node_textfile_scrape_error") == 0,
              f"node_exporter could not parse banger.prom:\n{open(output).read()}")
        check(value(got, "node_textfile_mtime_seconds", file=output) > 0, "no mtime for the file")
        want = {
            ("banger_up", ()): 1,
            ("banger_vms", (("state", "starting"),)): 1,
            ("banger_vms", (("state", "running"),)): 1,
            ("banger_vms", (("state", "stopped"),)): 1,
            ("banger_vms_liveness_unknown", ()): 0,
            ("banger_vm_exits_total", ()): 1,
            ("banger_teardown_resources_total", (("result", "absent"),)): 1,
            ("banger_teardown_resources_total", (("result", "refused"),)): 1,
            ("banger_teardown_resources_total", (("result", "removed"),)): 0,
            ("banger_teardown_resources_total", (("result", "busy"),)): 0,
            ("banger_teardown_resources_total", (("result", "failed"),)): 0,
            ("banger_teardowns_unanswered_total", ()): 0,
            ("banger_persist_failures_total", ()): 0,
            ("banger_reconcile_duration_seconds_count", ()): 1,
            ("banger_reconciles_failed_total", ()): 0,
            ("banger_helper_state", (("state", "ok"),)): 1,
            ("banger_helper_state", (("state", "gone"),)): 0,
            ("banger_helper_privileged", ()): 1,
            ("banger_calls_total", (("method", "Register"),)): 3,
            ("banger_calls_total", (("method", "SetHandles"),)): 2,
            ("banger_calls_total", (("method", "Teardown"),)): 1,
            ("banger_calls_total", (("method", "Watch"),)): 1,
            ("banger_calls_total", (("method", "GetStatus"),)): 1,
            ("banger_calls_total", (("method", "other"),)): 0,
            ("banger_call_errors_total", (("method", "Teardown"),)): 0,
            ("banger_call_errors_total", (("method", "SetHandles"),)): 0,
            ("banger_connections_refused_total", ()): 0,
            ("banger_helper_replacements_total", ()): 0,
            ("banger_info", (("version", os.environ.get("BANGER_PROJECT_VERSION", "")),)): 1,
        }
        for (name, labels), expected in want.items():
            got_value = value(got, name, **dict(labels))
            check(got_value == expected, f"{name}{dict(labels)} = {got_value}, want {expected}")
        check(value(got, "banger_reconcile_duration_seconds_sum") > 0, "reconcile took no time")
        banger = sorted({k[0] for k in got if k[0].startswith("banger_")})
        check(not any("m1" in str(k[1]) or "m2" in str(k[1]) for k in got),
              "a VM id became a label")
        print(f"node_exporter on 127.0.0.1:{exporter.port} serves {len(banger)} banger "
              f"families; {len(want)} values as the sequence must leave them")

        # bangerd gone: the same command says so in the file, and exits 3.
        s2.kill()
        d.stop()
        r = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 3, f"with bangerd gone: exit {r.returncode} {r.stderr!r}")
        got = exporter.scrape()
        check(value(got, "node_textfile_scrape_error") == 0, "the down file does not parse")
        check(value(got, "banger_up") == 0, "banger_up is not 0 with bangerd gone")
        check(not any(k[0] == "banger_vms" for k in got), "old figures still served")
        print("bangerd gone: banger_up 0, exit 3")
    finally:
        if exporter:
            exporter.stop()
        if s2:
            s2.kill()
        if d:
            d.finish()
        subprocess.run(["ip", "link", "del", bridge], stderr=subprocess.DEVNULL)
        inst.cleanup()
        shutil.rmtree(textfile_dir, ignore_errors=True)


CASES = {"node-exporter": case_node_exporter}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        fail(f"usage: {sys.argv[0]} {{{','.join(CASES)}}}")
    CASES[sys.argv[1]]()
