#!/usr/bin/env python3
"""Check that a JUnit file has every test a kselftest printed, with the same status.

    ci/check-kselftest-junit.py RAW.tap JUNIT.xml PROGRAM [--expect-total N]

RAW.tap is what the program printed in the guest (``testbed run --kselftest`` keeps it in
``<artifacts>/kselftest-<dir>-<program>/<program>.tap``). Deliberately independent of
testbed.ktap: plain regular expressions on the raw lines, ElementTree on the XML. Each top-level
``ok N name`` must be a testcase ``PROGRAM.name`` with no failure, error or skipped child; each
``ok N name # SKIP reason`` one with ``<skipped message="reason">``; each ``not ok`` one with a
``<failure>``. The counts are printed; any difference exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

RESULT = re.compile(r"^(ok|not ok) (\d+) (\S+)(?: # ?(SKIP)? ?(.*))?$")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("junit", type=Path)
    ap.add_argument("program")
    ap.add_argument("--expect-total", type=int, help="the number of results the program prints")
    args = ap.parse_args()

    expected: dict[str, tuple[str, str]] = {}
    plan = None
    for line in args.raw.read_text(errors="replace").splitlines():
        if re.fullmatch(r"1\.\.\d+", line):
            plan = int(line[3:])
        match = RESULT.match(line)
        if not match:
            continue
        ok, _, name, skip, reason = match.groups()
        status = "skipped" if skip else ("passed" if ok == "ok" else "failed")
        expected[f"{args.program}.{name}"] = (status, (reason or "").strip() if skip else "")

    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(args.junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name.startswith(f"{args.program}."):
            continue
        status, message = "passed", ""
        for child in case:
            if child.tag == "skipped":
                status, message = "skipped", child.get("message", "")
            elif child.tag in ("failure", "error"):
                status = "failed" if child.tag == "failure" else "error"
        found[name] = (status, message)

    errors = []
    if plan is None or plan != len(expected):
        errors.append(f"the raw output's plan is {plan}, it has {len(expected)} results")
    if args.expect_total is not None and len(expected) != args.expect_total:
        errors.append(f"expected {args.expect_total} results, the raw output has {len(expected)}")
    for name, want in expected.items():
        got = found.get(name)
        if got is None:
            errors.append(f"{name}: {want[0]} in the output, missing from {args.junit}")
        elif got != want:
            errors.append(f"{name}: {want} in the output, {got} in {args.junit}")
    for name in found.keys() - expected.keys():
        errors.append(f"{name}: in {args.junit} ({found[name][0]}), not in the output")
    counts = {s: sum(v[0] == s for v in expected.values()) for s in ("passed", "failed", "skipped")}
    print(
        f"{args.program}: {len(expected)} results in the output "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {len(found)} testcases {args.program}.* in {args.junit}"
    )
    for error in errors:
        print(f"check-kselftest-junit: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
