#!/usr/bin/env python3
"""contrib/banger.catalog explains every MESSAGE_ID of common/message_id.h, and no other.

    test_catalog.py SOURCE_ROOT

Both ways: each id the header defines has exactly one catalog entry (with
Subject, Defined-By and Documentation), each entry's id is one the header
defines, the header has no id twice, and every @FIELD@ a text substitutes
is a field the daemons send. Then journalctl itself compiles the catalog
(--update-catalog into a throw-away --root: what a package's install does)
and lists it: a catalog journalctl refuses or reads differently fails here.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bangertest import check, skip  # noqa: E402


def main():
    src = sys.argv[1]
    header = open(os.path.join(src, "common", "message_id.h")).read()
    ids = re.findall(r'"([0-9a-f]{32})"', header)
    check(len(ids) >= 20, f"only {len(ids)} ids in message_id.h")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    check(not dup, f"ids defined twice in message_id.h: {dup}")

    catalog_path = os.path.join(src, "contrib", "banger.catalog")
    text = open(catalog_path).read()
    entries = {}
    for block in re.split(r"^-- ", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        mid = head.strip()
        check(re.fullmatch(r"[0-9a-f]{32}", mid), f"catalog entry id {mid!r} is not 128-bit hex")
        check(mid not in entries, f"catalog has {mid} twice")
        entries[mid] = body
    missing = sorted(set(ids) - set(entries))
    extra = sorted(set(entries) - set(ids))
    check(not missing, f"ids without a catalog entry: {missing}")
    check(not extra, f"catalog entries for ids message_id.h does not define: {extra}")
    for mid, body in entries.items():
        for key in ("Subject:", "Defined-By: banger", "Documentation:"):
            check(re.search(r"^" + re.escape(key), body, re.M), f"{mid}: no {key} line")
        check(re.search(r"\n\n\S", body), f"{mid}: no text after the header")

    sources = ""
    for d in ("common", "daemon", "privhelper"):
        for name in os.listdir(os.path.join(src, d)):
            if name.endswith((".c", ".h")):
                sources += open(os.path.join(src, d, name)).read()
    for field in sorted(set(re.findall(r"@([A-Z0-9_]+)@", text))):
        check(f'"{field}"' in sources, f"the catalog substitutes @{field}@, which no code sends")

    journalctl = shutil.which("journalctl")
    if not journalctl:
        skip("journalctl is not installed")
    root = tempfile.mkdtemp(prefix="banger-test-catalog-")
    try:
        cat_dir = os.path.join(root, "usr", "lib", "systemd", "catalog")
        os.makedirs(cat_dir)
        shutil.copy(catalog_path, cat_dir)
        r = subprocess.run([journalctl, "--root", root, "--update-catalog"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60)
        check(r.returncode == 0 and not r.stdout.strip(),
              f"journalctl --update-catalog exited {r.returncode}: {r.stdout}")
        check(os.path.exists(os.path.join(root, "var", "lib", "systemd", "catalog", "database")),
              "--update-catalog wrote no database")
        r = subprocess.run([journalctl, "--root", root, "--list-catalog"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60)
        check(r.returncode == 0, f"journalctl --list-catalog exited {r.returncode}: {r.stdout}")
        listed = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
        check(set(listed) == set(ids),
              f"journalctl lists {sorted(set(listed) ^ set(ids))} differently from the header")
        for mid, body in entries.items():
            subject = re.search(r"^Subject: (.*)$", body, re.M).group(1)
            check(subject in listed[mid], f"{mid}: journalctl lists {listed[mid]!r}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"PASS: {len(ids)} message ids, each with its catalog entry; journalctl compiles it")


if __name__ == "__main__":
    main()
