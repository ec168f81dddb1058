"""``testbed run``: the main job -- the reference P2P suite on a kernel, then a results table.

It runs the pytest suite in ``tests/p2p/`` (one test per claim of the reference RFC, plus the
hot-unplug extras) through pytest itself, so the same tests run from ``pytest`` directly, and
prints one row per test: the claim it checks, its name, the result and its duration.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import paths
from testbed.cli.common import add_kernel_options

SUITE = paths.PROJECT_ROOT / "tests" / "p2p"
_CLAIM = re.compile(r"claim(\d+)")


@dataclass
class Row:
    claim: str
    test: str
    result: str
    seconds: float


class Collector:
    """A pytest plugin object recording one row per test."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        #: what the tests recorded as JUnit properties: the machine, the drivers' path
        self.facts: dict[str, set[str]] = {"machine": set(), "p2p_path": set()}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key in self.facts and value:
                self.facts[key].update(str(value).split(","))
        name = report.nodeid.split("::", 1)[-1]
        match = _CLAIM.search(name)
        row = self.rows.setdefault(
            report.nodeid, Row(f"claim{match.group(1)}" if match else "-", name, "passed", 0.0)
        )
        row.seconds += report.duration
        if report.failed:
            row.result = "ERROR" if report.when != "call" else "FAILED"
        elif report.skipped and row.result == "passed":
            row.result = "skipped"


def context(facts: dict[str, set[str]]) -> str:
    """``path: vm_ops, machine: switch`` -- what the table's results were obtained on."""
    return ", ".join(
        f"{label}: {'/'.join(sorted(facts.get(key, ()))) or '?'}"
        for label, key in (("path", "p2p_path"), ("machine", "machine"))
    )


def table(rows: list[Row], facts: dict[str, set[str]] | None = None) -> str:
    # claims in order, then the other tests, each group in the order they ran
    rows = sorted(rows, key=lambda r: int(r.claim[5:]) if r.claim != "-" else 1 << 30)
    head = ("claim", "test", "result", "seconds")
    cells = [(r.claim, r.test, r.result, f"{r.seconds:.1f}") for r in rows]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)
    ]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(w) if i == 3 else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    where = f" ({context(facts)})" if facts is not None else ""
    out = [f"results{where}"] if where else []
    out += [line(head), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    total = sum(r.seconds for r in rows)
    passed = sum(r.result == "passed" for r in rows)
    out.append(f"{passed}/{len(rows)} passed in {total:.1f} s{where}")
    return "\n".join(out)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run the reference P2P suite (the main job) and print a results table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--junit", metavar="FILE", type=Path, help="also write JUnit XML here")
    p.add_argument(
        "-k", dest="keyword", metavar="EXPR", help="only tests matching EXPR (as pytest -k)"
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=Path("testbed-artifacts"),
        help="per-test artifact folders, kept for failures (default: %(default)s)",
    )
    p.add_argument("--keep-artifacts", action="store_true", help="keep them for passes too")
    p.add_argument(
        "--machine", help="machine to run the suite on, e.g. 'switch' (default: 'default')"
    )
    add_kernel_options(p)
    p.set_defaults(func=main)


def pytest_args(args: argparse.Namespace) -> list[str]:
    argv = [str(SUITE), "-p", "no:cacheprovider", "-q", f"--testbed-artifacts={args.artifacts}"]
    if args.keep_artifacts:
        argv.append("--testbed-keep-artifacts")
    if args.junit:
        argv.append(f"--junitxml={args.junit}")
    if args.keyword:
        argv += ["-k", args.keyword]
    for option in ("kernel", "modules", "build", "accel", "machine"):
        value = getattr(args, option)
        if value is not None:
            argv.append(f"--testbed-{option}={value}")
    return argv


def main(args: argparse.Namespace) -> int:
    collector = Collector()
    code = pytest.main(pytest_args(args), plugins=[collector])
    print()
    print(table(list(collector.rows.values()), collector.facts))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("testbed: error: no tests were collected from", SUITE)
        return 1
    return int(code)
