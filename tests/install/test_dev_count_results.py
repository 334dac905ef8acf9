#!/usr/bin/env python3
"""`./dev count-results`: the verdicts `./dev test` ends with, on crafted meson logs.

count_results (in dev) reads meson's JSON test logs against a manifest
(tests/expected-tests.txt: every test of each run, and the one reason each
may skip for). Each case here writes a small manifest and logs, runs
`dev count-results RUN=LOG...` with BANGER_EXPECTED_TESTS pointing at that
manifest, and checks the last line, the exit status and that stderr names
the test at fault:

  - all good (passes and a skip for its declared reason): exit 0;
  - a skip the manifest does not declare, a skip for another reason, a skip
    whose reason is only quoted and not said, a test that failed or timed out,
    a test that has no result (a suite that stopped registering tests), a test
    not listed for its run, a missing log, a broken log line, a run the
    manifest does not know, a test listed twice: each a failure, exit 1;
  - nothing but declared skips: nothing passed, exit 1.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import check, fail  # noqa: E402

DEV = os.environ.get("BANGER_DEV_SCRIPT", "")

MANIFEST = """\
# test          runs             reason
unit-a          gcc,asan-unit
unit-b          gcc,asan-unit
dm-real         gcc,asan-int     no device-mapper in this kernel
only-gcc        gcc
"""


def entry(name, result, stdout="", suite="banger:unit"):
    """One line of meson's testlog.json, as meson 1.0 writes it."""
    return {"name": f"{suite} / {name}", "stdout": stdout, "result": result, "starttime": 0.0,
            "duration": 0.01, "returncode": {"OK": 0, "SKIP": 77}.get(result, 1), "env": {},
            "command": [name]}


SKIP_DM = "SKIP: no device-mapper in this kernel (/proc/misc names none); more words\n"


def good_gcc():
    return [entry("unit-a", "OK"), entry("unit-b", "OK"),
            entry("dm-real", "SKIP", SKIP_DM, suite="banger:integration+teardown"),
            entry("only-gcc", "OK", suite="banger:vm")]


def replace(entries, name, new):
    return [new if e["name"].endswith(" / " + name) else e for e in entries]


class Scratch:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="banger-test-count-")
        self.manifest = os.path.join(self.dir, "expected-tests.txt")
        with open(self.manifest, "w") as f:
            f.write(MANIFEST)
        self.n = 0

    def log(self, entries, raw_tail=""):
        self.n += 1
        path = os.path.join(self.dir, f"log{self.n}.json")
        with open(path, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in entries) + raw_tail)
        return path

    def count(self, *run_logs, manifest=None):
        r = subprocess.run([DEV, "count-results", *run_logs], capture_output=True, text=True,
                           env=dict(os.environ, BANGER_EXPECTED_TESTS=manifest or self.manifest),
                           timeout=60)
        lines = r.stdout.splitlines()
        return r.returncode, lines[-1] if lines else "", r.stdout, r.stderr

    def expect(self, what, run_logs, last, rc, blamed=(), manifest=None):
        got_rc, got_last, out, err = self.count(*run_logs, manifest=manifest)
        check(got_last == last and got_rc == rc,
              f"{what}: last line {got_last!r}, exit {got_rc}; want {last!r}, exit {rc}\n"
              f"stdout:\n{out}stderr:\n{err}")
        check(out.count("\n") == 1, f"{what}: stdout is more than the one count line:\n{out}")
        for needle in blamed:
            check(needle in err, f"{what}: stderr does not say {needle!r}:\n{err}")
        print(f"{what}: {got_last} (exit {got_rc})" + (f"; {err.strip()}" if err else ""))

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    if not DEV or not os.access(DEV, os.X_OK):
        fail(f"BANGER_DEV_SCRIPT is not an executable dev script: {DEV!r} (run through meson)")
    s = Scratch()
    try:
        asan_unit = s.log([entry("unit-a", "OK"), entry("unit-b", "OK")])
        asan_int = s.log([entry("dm-real", "SKIP", SKIP_DM)])
        s.expect("all good", [f"gcc={s.log(good_gcc())}", f"asan-unit={asan_unit}",
                              f"asan-int={asan_int}"], "5 passed, 0 failed, 2 skipped", 0)
        s.expect("all good, no skip",
                 [f"gcc={s.log(replace(good_gcc(), 'dm-real', entry('dm-real', 'OK')))}"],
                 "4 passed, 0 failed", 0)

        undeclared = replace(good_gcc(), "unit-b",
                             entry("unit-b", "SKIP", "SKIP: needs root\n"))
        s.expect("an undeclared skip", [f"gcc={s.log(undeclared)}"],
                 "2 passed, 1 failed, 1 skipped", 1, ["unit-b skipped", "needs root"])

        wrong = replace(good_gcc(), "dm-real", entry(
            "dm-real", "SKIP", "SKIP: cannot open /dev/mapper/control (Permission denied)\n"))
        s.expect("a skip with the wrong reason", [f"gcc={s.log(wrong)}"],
                 "3 passed, 1 failed", 1, ["dm-real skipped, but not for its declared reason"])

        quoted = replace(good_gcc(), "dm-real", entry(
            "dm-real", "SKIP", "note: SKIP: no device-mapper in this kernel, said elsewhere\n"))
        s.expect("the reason quoted, not said", [f"gcc={s.log(quoted)}"],
                 "3 passed, 1 failed", 1, ["dm-real skipped, but not for its declared reason"])

        silent = replace(good_gcc(), "dm-real", entry("dm-real", "SKIP", ""))
        s.expect("a skip that says nothing", [f"gcc={s.log(silent)}"],
                 "3 passed, 1 failed", 1, ["dm-real", "no SKIP line"])

        missing = [e for e in good_gcc() if not e["name"].endswith(" / unit-b")]
        s.expect("a missing test", [f"gcc={s.log(missing)}"],
                 "2 passed, 1 failed, 1 skipped", 1, ["gcc: unit-b has no result"])

        other_run = [entry("unit-a", "OK"), entry("unit-b", "OK"), entry("only-gcc", "OK")]
        s.expect("a test of another run", [f"asan-unit={s.log(other_run)}"],
                 "2 passed, 1 failed", 1, ["only-gcc ran (OK), but"])

        extra = good_gcc() + [entry("brand-new", "OK")]
        s.expect("a test the manifest does not list", [f"gcc={s.log(extra)}"],
                 "3 passed, 1 failed, 1 skipped", 1, ["brand-new ran (OK)"])

        failing = replace(replace(good_gcc(), "unit-a", entry("unit-a", "FAIL")),
                          "unit-b", entry("unit-b", "TIMEOUT"))
        s.expect("a failure and a timeout", [f"gcc={s.log(failing)}"],
                 "1 passed, 2 failed, 1 skipped", 1, ["unit-a: FAIL", "unit-b: TIMEOUT"])

        cut = s.log(good_gcc()[:2], raw_tail='{"name": "banger:unit / on')
        s.expect("a log cut short", [f"gcc={cut}"],
                 "2 passed, 3 failed", 1, ["not a meson test result", "dm-real has no result",
                                           "only-gcc has no result"])

        s.expect("no log at all", [f"asan-unit={os.path.join(s.dir, 'nonexistent.json')}"],
                 "0 passed, 2 failed", 1, ["no test log", "unit-a has no result"])

        s.expect("a run the manifest does not know", [f"gcc={s.log(good_gcc())}",
                                                      f"asan-other={asan_unit}"],
                 "3 passed, 1 failed, 1 skipped", 1, ["asan-other: "])

        twice = os.path.join(s.dir, "twice.txt")
        with open(twice, "w") as f:
            f.write(MANIFEST + "unit-a          gcc\n")
        s.expect("a test listed twice", [f"gcc={s.log(good_gcc())}"],
                 "3 passed, 1 failed, 1 skipped", 1, ["each test once"], manifest=twice)

        s.expect("nothing passed", [f"asan-int={asan_int}"], "0 passed, 0 failed, 1 skipped", 1)
    finally:
        s.remove()


if __name__ == "__main__":
    main()
