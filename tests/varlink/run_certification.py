#!/usr/bin/env python3
"""The official Varlink certification against proto/varlink.c.

Starts cert_server (org.varlink.certification on our server library) on a
throw-away socket and runs Debian's `varlink-go-certification --client`
against it. That client prints "End: 'true'" only after a flawless run, but
exits 0 whatever happened (it prints "TestNN() failed" and returns), so the
test passes only on exit 0 AND that line AND no failure line. A few raw
calls then check that the server is a real judge: a wrong value, a skipped
step and an unknown client are refused. Every wait is bounded.
"""
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import fail, skip  # noqa: E402

CERTIFICATION = "/usr/bin/varlink-go-certification"
IFACE = "org.varlink.certification."


def wait_for_line(proc, needle, timeout):
    """Read proc's stdout until a line equal to needle; bounded."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    seen = b""
    while needle.encode() + b"\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        seen += chunk
    return True


class RawClient:
    """Just enough Varlink to send hand-made calls and read the replies."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""

    def call(self, method, parameters=None, **flags):
        msg = {"method": IFACE + method if "." not in method else method}
        if parameters is not None:
            msg["parameters"] = parameters
        msg.update(flags)
        self.sock.sendall(json.dumps(msg).encode() + b"\0")
        return self.read_reply()

    def send_many(self, calls):
        """Several calls in one write: the server must answer them one by one, in order."""
        data = b""
        for method, parameters, flags in calls:
            msg = {"method": IFACE + method, "parameters": parameters}
            msg.update(flags)
            data += json.dumps(msg).encode() + b"\0"
        self.sock.sendall(data)

    def read_reply(self):
        while b"\0" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                fail("server closed the connection")
            self.buf += chunk
        text, _, self.buf = self.buf.partition(b"\0")
        return json.loads(text)

    def close(self):
        self.sock.close()


def expect_error(reply, name, what):
    if reply.get("error") != IFACE + name:
        fail(f"{what}: want {name}, got {reply}")


MYTYPE = {
    "object": {"method": IFACE + "Test09", "parameters": {"map": {"foo": "Foo", "bar": "Bar"}}},
    "enum": "two",
    "struct": {"first": 1, "second": "2"},
    "array": ["one", "two", "three"],
    "dictionary": {"foo": "Foo", "bar": "Bar"},
    "stringset": {"one": {}, "two": {}, "three": {}},
    "interface": {"foo": [None, {"foo": "foo", "bar": "bar"}, None, {"one": "foo", "two": "bar"}],
                  "anon": {"foo": True, "bar": False}},
}


def pipelined_run(path):
    """A whole run written in two bursts: pipelining, "more" and "oneway" back to back."""
    c = RawClient(path)
    try:
        cid = c.call("Start")["parameters"]["client_id"]
        four = {"bool": False, "int": 2, "float": math.pi, "string": "a lot of string"}
        c.send_many([
            ("Test01", {"client_id": cid}, {}),
            ("Test02", {"client_id": cid, "bool": True}, {}),
            ("Test03", {"client_id": cid, "int": 1}, {}),
            ("Test04", {"client_id": cid, "float": 1.0}, {}),
            ("Test05", {"client_id": cid, "string": "ping"}, {}),
            ("Test06", dict(four, client_id=cid), {}),
            ("Test07", {"client_id": cid, "struct": four}, {}),
            ("Test08", {"client_id": cid, "map": {"foo": "Foo", "bar": "Bar"}}, {}),
            ("Test09", {"client_id": cid, "set": {"one": {}, "two": {}, "three": {}}}, {}),
        ])
        for n in range(1, 10):
            r = c.read_reply()
            if "error" in r:
                fail(f"pipelined Test0{n}: {r}")
        if r["parameters"]["mytype"]["interface"] != MYTYPE["interface"]:
            fail(f"Test09 mytype: {r}")
        replies = [f"Reply number {i}" for i in range(1, 11)]
        c.send_many([
            ("Test10", {"client_id": cid, "mytype": MYTYPE}, {"more": True}),
            ("Test11", {"client_id": cid, "last_more_replies": replies}, {"oneway": True}),
            ("End", {"client_id": cid}, {}),
        ])
        got = []
        while True:
            r = c.read_reply()
            if "error" in r:
                fail(f"pipelined Test10: {r}")
            got.append(r["parameters"]["string"])
            if not r.get("continues"):
                break
        if got != replies:
            fail(f"Test10 replies {got}")
        r = c.read_reply()  # Test11 is oneway: the next reply must be End's
        if r != {"parameters": {"all_ok": True}}:
            fail(f"End after a pipelined run: {r}")
    finally:
        c.close()
    print("a pipelined run (all calls of a step written at once) passes too")


def judge_checks(path):
    c = RawClient(path)
    try:
        expect_error(c.call("Test01", {"client_id": "no-such-client"}), "ClientIdError",
                     "unknown client")

        client_id = c.call("Start")["parameters"]["client_id"]
        r = c.call("Test02", {"client_id": client_id, "bool": True})
        expect_error(r, "CertificationError", "Test02 before Test01")
        if r["parameters"]["wants"] != {"method": IFACE + "Test01"}:
            fail(f"skipped step: wants should name Test01: {r}")

        c.call("Test01", {"client_id": client_id})
        r = c.call("Test02", {"client_id": client_id, "bool": False})
        expect_error(r, "CertificationError", "Test02 with bool false")
        if r["parameters"]["got"]["parameters"]["bool"] is not False:
            fail(f"CertificationError must echo what it got: {r}")
        expect_error(c.call("End", {"client_id": client_id}), "ClientIdError",
                     "a failed run must be over")

        client_id = c.call("Start")["parameters"]["client_id"]
        c.call("Test01", {"client_id": client_id})
        r = c.call("Test02", {"client_id": client_id, "bool": True, "extra": 1})
        expect_error(r, "CertificationError", "Test02 with an extra member")

        r = c.call("org.varlink.service.GetInterfaceDescription",
                   {"interface": "org.varlink.certification"})
        if "error CertificationError (wants: object, got: object)" not in \
                r.get("parameters", {}).get("description", ""):
            fail(f"interface description: {r}")
    finally:
        c.close()
    print("the server refuses an unknown client, a skipped step, a wrong value, an extra member")


def main():
    if len(sys.argv) != 2:
        fail(f"usage: {sys.argv[0]} CERT_SERVER")
    if not os.access(CERTIFICATION, os.X_OK):
        skip(f"{CERTIFICATION} is missing (Debian package varlink-go)")
    tmp = tempfile.mkdtemp(prefix="banger-varlink-cert-")
    path = os.path.join(tmp, "cert.sock")
    server = subprocess.Popen([sys.argv[1], path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE)
    try:
        if not wait_for_line(server, "ready", 10):
            fail("cert_server did not print ready within 10 s")
        try:
            run = subprocess.run([CERTIFICATION, "--client", f"--varlink=unix:{path}"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=60)
        except subprocess.TimeoutExpired as e:
            fail(f"varlink-go-certification ran over 60 s; output so far:\n"
                 f"{(e.output or b'').decode(errors='replace')}")
        out = run.stdout.decode(errors="replace")
        print(out, end="")
        failed = [line for line in out.splitlines() if "failed" in line.lower()]
        if run.returncode != 0 or failed or "End: 'true'" not in out:
            fail(f"certification did not pass (exit {run.returncode}; {failed or 'no End: true'})")
        print("varlink-go-certification: passed")

        pipelined_run(path)
        judge_checks(path)

        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            fail("cert_server did not exit within 5 s of SIGTERM")
        if rc != 0:
            fail(f"cert_server exited {rc}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
