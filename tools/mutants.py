#!/usr/bin/env python3
"""Plant small deliberate bugs, one at a time, and see whether the suite catches each.

A suite that stays green while banger is broken proves nothing. This script
takes the committed tree (HEAD) into a scratch worktree, and for every
mutant below: applies its one edit (the text to replace must occur exactly
once, or the mutant is reported STALE so the list keeps up with the code),
rebuilds, runs the tests that should catch it, and prints CAUGHT (some test
failed), SURVIVED (all passed: a hole in the suite) or BROKEN (it did not
build: no verdict). The edit is undone before the next mutant.

Run by hand, as root (the tests need it), from the repository:
    tools/mutants.py                 every mutant
    tools/mutants.py NAME...         only these
    tools/mutants.py --list
It keeps its scratch tree in /var/tmp/banger-mutants (reused between runs).
Not part of CI: it takes several minutes.
"""
import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

SCRATCH = "/var/tmp/banger-mutants"
BUILDS = {
    # name: meson setup arguments (and the compiler)
    "gcc": ([], {}),
    "crash": (["-Dcrash_points=true"], {}),
    "fuzz": (["-Dfuzzing=true", "-Db_sanitize=address,undefined", "-Db_lundef=false"],
             {"CC": "clang"}),
}


@dataclass
class Mutant:
    name: str
    why: str          # the rule it breaks
    path: str
    old: object       # the text to replace, or a list of them (with new a list too)
    new: object
    tests: list = field(default_factory=list)  # meson test names, or "--suite X" alone
    build: str = "gcc"


MUTANTS = [
    Mutant("decoder-reason-unchecked",
           "the privsep decoder checks every reason a teardown reply carries",
           "proto/privsep_reply.c",
           "if (t->reason < 0 || t->reason >= PS_REASON_MAX_ || t->err > 0)",
           "if (t->err > 0)",
           ["fuzz-privsep-decode"], "fuzz"),
    Mutant("set-cache-before-files",
           "SetHandles writes vm.json and handles.json before the cache changes",
           "daemon/service.c",
           "\tm->written = set_handles_written;\n\tmutation_submit(m, t);",
           "\tm->written = set_handles_written;\n\tcache_entry_put(e, rec, &m->h);\n"
           "\tmutation_submit(m, t);",
           ["--suite", "crash"], "crash"),
    Mutant("incomplete-scan-as-dead",
           "a scan that could not inspect every process never proves a VM dead",
           "daemon/reconcile.c",
           "decide_unfound(&rc->vms[i], e, res->uninspected == 0);",
           "decide_unfound(&rc->vms[i], e, true);",
           ["unknown-uninspected-scan"]),
    Mutant("scan-overrules-pidfd",
           "a live watched pidfd is not overruled by a scan that missed the VM",
           "daemon/reconcile.c",
           "\tif (e->liveness != VM_ALIVE || e->pidfd < 0)\n\t\treturn false;",
           "\tif (1)\n\t\treturn false;",
           ["unknown-pidfd-says-alive"]),
    Mutant("torn-down-without-helper",
           "a teardown the helper never answered is never reported done",
           "daemon/service_calls.c",
           "\tif (out->err < 0) {\n\t\tanswer_error(d, call, SERVICE_HELPER_UNAVAILABLE",
           "\tif (0) {\n\t\tanswer_error(d, call, SERVICE_HELPER_UNAVAILABLE",
           ["unknown-helper-dies-mid-teardown"]),
    Mutant("dm-uuid-prefix-unchecked",
           "a DM device is removed only when its uuid has the policy's prefix",
           "proto/policy.c",
           "bool policy_dm_uuid_allowed(const struct ps_policy *p, const char *uuid)\n{",
           "bool policy_dm_uuid_allowed(const struct ps_policy *p, const char *uuid)\n{\n"
           "\treturn true;",
           ["--suite", "vm"]),
    Mutant("identity-by-name",
           "a process is the VM's only if it holds the api socket's listener",
           "privhelper/proc.c",
           "\treturn l && unix_node_equal(&l->node, c->node);",
           "\treturn l != NULL;",
           # (meson intersects --suite with test names: name the tests alone)
           ["identity-impostor-connects", "privhelper-scan-identity",
            "privhelper-probe-argv-position"]),
    Mutant("ambiguity-ignored",
           "two holders of one listener make liveness unknown, never a switch",
           "privhelper/proc.c",
           "if (e->kind != PS_SCAN_AMBIGUOUS && (e->kind != PS_SCAN_MATCH || j - i == 1))",
           "if (e->kind != PS_SCAN_AMBIGUOUS && (e->kind != PS_SCAN_MATCH || j - i >= 1))",
           ["privhelper-scan-identity", "identity-listener-passed"]),
    Mutant("set-switches-watched",
           "SetHandles never replaces a live watched firecracker",
           "daemon/service_calls.c",
           "if (e->pid != r->pid && service_pidfd_alive(e)) {",
           "if (0) {",
           ["api-set-no-switch"]),
    Mutant("no-listener-wait",
           "SetHandles waits for a firecracker that has not listened yet",
           "daemon/service_calls.c",
           "if (r->reason == PS_REASON_NO_LISTENER && set_probe_retry(req))",
           "if (r->reason == PS_REASON_NO_LISTENER && 0 && set_probe_retry(req))",
           ["api-set-waits-for-listener"]),
    Mutant("loop-hidden-backing-accepted",
           "a loop whose backing file cannot be opened beneath its root is refused",
           "privhelper/loop.c",
           "\t\treturn open_error_is_helpers(fd) ? fd : 0;",
           "\t\treturn open_error_is_helpers(fd) ? fd : 1;",
           ["teardown-loop-refused-hidden", "teardown-loop-refused-other-namespace"]),
    Mutant("json-comments-allowed",
           "JSON comments are refused",
           "common/json.c",
           "yajl_config(h, yajl_allow_comments, 0);",
           "yajl_config(h, yajl_allow_comments, 1);",
           ["json"]),
    Mutant("per-uid-limit-off",
           "a reader cannot hold more than max_connections_per_uid connections",
           "proto/varlink.c",
           "return s->stats.connections < for_readers && (!u || u->n < l->max_per_uid);",
           "return s->stats.connections < for_readers || !u || u->n < l->max_per_uid;",
           ["--suite", "frontdoor"]),
    Mutant("client-fd-closed-on-loop",
           "an fd a client sent is never closed on the event loop",
           "common/closer.c",
           "\tif (fd < 0)\n\t\treturn;\n\tpthread_mutex_lock(&c->lock);",
           "\tif (fd >= 0)\n\t\tclose(fd);\n\treturn;\n\tpthread_mutex_lock(&c->lock);",
           ["--suite", "frontdoor"]),
]


def run(cmd, cwd, env=None, quiet=True):
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.DEVNULL if quiet else None).returncode


def scratch_tree(repo):
    """A worktree of HEAD in SCRATCH, reset to HEAD (builds are kept, so rebuilds are short)."""
    if not os.path.isdir(os.path.join(SCRATCH, ".git")) and not os.path.isfile(
            os.path.join(SCRATCH, ".git")):
        shutil.rmtree(SCRATCH, ignore_errors=True)
        subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", SCRATCH, "HEAD"],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["git", "-C", SCRATCH, "checkout", "--detach", "-q",
                    subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"],
                                            text=True).strip()], check=True)
    subprocess.run(["git", "-C", SCRATCH, "reset", "-q", "--hard"], check=True)


def build_dir(name):
    args, env_add = BUILDS[name]
    d = os.path.join(SCRATCH, f"build-{name}")
    if not os.path.isfile(os.path.join(d, "build.ninja")):
        env = dict(os.environ, **env_add)
        if run(["meson", "setup", d, *args], SCRATCH, env) != 0:
            return None
    return d


def skipped_tests(build):
    """Names of the tests the last meson test run in build reported as skipped."""
    import json
    names = []
    with open(os.path.join(build, "meson-logs", "testlog.json")) as fh:
        for line in fh:
            if line.strip() and json.loads(line)["result"] == "SKIP":
                names.append(json.loads(line)["name"])
    return names


def verdict(m):
    path = os.path.join(SCRATCH, m.path)
    with open(path) as fh:
        text = fh.read()
    olds = m.old if isinstance(m.old, list) else [m.old]
    news = m.new if isinstance(m.new, list) else [m.new]
    mutated = text
    for old, new in zip(olds, news):
        if mutated.count(old) != 1:
            return "STALE", f"the text to replace occurs {mutated.count(old)} times in {m.path}"
        mutated = mutated.replace(old, new)
    d = build_dir(m.build)
    if not d:
        return "BROKEN", f"meson setup of the {m.build} build failed"
    try:
        with open(path, "w") as fh:
            fh.write(mutated)
        if run(["ninja", "-C", d], SCRATCH) != 0:
            return "BROKEN", "does not build"
        env = dict(os.environ, BANGER_FUZZ_SECONDS=os.environ.get("BANGER_FUZZ_SECONDS", "30"))
        rc = run(["meson", "test", "-C", d, "--no-rebuild", *m.tests], SCRATCH, env)
        if rc:
            return "CAUGHT", f"meson test {' '.join(m.tests)}: exit {rc}"
        # meson passes a skip; ./dev test fails any skip the manifest does not declare
        # (a crashing fuzzer exits 77), and none of these tests may skip.
        skipped = skipped_tests(d)
        if skipped:
            return "CAUGHT", f"undeclared skip of {', '.join(skipped)} (./dev test fails it)"
        return "SURVIVED", f"meson test {' '.join(m.tests)} passed"
    finally:
        with open(path, "w") as fh:
            fh.write(text)
        run(["ninja", "-C", d], SCRATCH)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for m in MUTANTS:
            print(f"{m.name:32} {m.why}")
        return 0
    chosen = [m for m in MUTANTS if not a.names or m.name in a.names]
    if os.geteuid() != 0:
        print("mutants: run me as root (the tests need it)", file=sys.stderr)
        return 2
    repo = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
    scratch_tree(repo)
    counts = {}
    for m in chosen:
        v, detail = verdict(m)
        counts[v] = counts.get(v, 0) + 1
        print(f"{v:8} {m.name:32} {detail}", flush=True)
    print(", ".join(f"{n} {v.lower()}" for v, n in sorted(counts.items())))
    return 1 if counts.get("SURVIVED") or counts.get("STALE") else 0


if __name__ == "__main__":
    sys.exit(main())
