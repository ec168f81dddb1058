"""``testbed run``: the main job -- the reference P2P suite on a kernel, then a results table.

It runs the pytest suite in ``tests/p2p/`` (one test per claim of the reference RFC, plus the
hot-unplug extras) through pytest itself, so the same tests run from ``pytest`` directly, and
prints one row per test: the claim it checks, its name, the result and its duration.

``-j N`` runs the tests on N pytest-xdist workers, each booting guests of its own (artifact
folders stay one per test; a module's shared-guest tests stay on one worker). ``--shard I/N``
runs the I-th of N deterministic parts, for a CI matrix; its JUnit suite is named after the
shard so the N files merge.

SIGINT (Ctrl-C) and SIGTERM (what a CI system sends on cancel) stop the run in order: pytest
tears every machine down, JUnit XML is still written, the table marks the test that was
running ``interrupted``, and the exit code is 130 or 143 (128 + the signal). A second signal
while that clean-up runs is ignored (the reaper covers a SIGKILL).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from testbed import paths
from testbed.cli.common import add_boot_options, add_kernel_options, kernel_from
from testbed.errors import TestbedError

if TYPE_CHECKING:
    import pytest

    from testbed.pytest_plugin.parallel import Shard

SUITE = paths.suite_dir()
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
        #: tests between their start and their finish (one per pytest-xdist worker at most)
        self.running: set[str] = set()
        #: what the tests recorded as JUnit properties: the machine, the drivers' path
        self.facts: dict[str, set[str]] = {"machine": set(), "p2p_path": set()}

    def _row(self, nodeid: str) -> Row:
        name = nodeid.split("::", 1)[-1]
        match = _CLAIM.search(name)
        return self.rows.setdefault(
            nodeid, Row(f"claim{match.group(1)}" if match else "-", name, "passed", 0.0)
        )

    # Under pytest-xdist the controller's hooks receive these for every worker's tests.
    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.running.add(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self.running.discard(nodeid)

    def interrupted(self) -> None:
        """The run was stopped: the tests that had started and not finished are
        ``interrupted``, whatever their setup reports said."""
        for nodeid in sorted(self.running):
            self._row(nodeid).result = "interrupted"
        self.running.clear()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key in self.facts and value:
                self.facts[key].update(str(value).split(","))
        row = self._row(report.nodeid)
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
    summary = f"{passed}/{len(rows)} passed in {total:.1f} s{where}"
    interrupted = sum(r.result == "interrupted" for r in rows)
    out.append(summary + (f" ({interrupted} interrupted)" if interrupted else ""))
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
    p.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="run the tests on N parallel workers (pytest-xdist), each with guests of its own "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--no-snapshot",
        action="store_false",
        dest="snapshot",
        default=True,
        help="boot every fresh default guest instead of resuming one saved per run (and "
        "worker); resuming is the default",
    )
    p.add_argument(
        "--snapshot",
        action="store_true",
        help=argparse.SUPPRESS,  # the default now; accepted for old command lines
    )
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only the I-th of N deterministic parts of the suite (a CI matrix; JUnit "
        "files merge)",
    )
    add_kernel_options(p)
    add_boot_options(p)
    p.set_defaults(func=main)


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of workers")
    return jobs


def _shard(text: str) -> Shard:
    # the plugin package imports pytest and the machine: only when --shard is given
    from testbed.pytest_plugin.parallel import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_args(args: argparse.Namespace) -> list[str]:
    argv = [str(SUITE), "-p", "no:cacheprovider", "-q", f"--testbed-artifacts={args.artifacts}"]
    # What the checkout's pyproject.toml sets, for an installed suite that has no ini file:
    # JUnit records the figures tests report with record_property.
    argv += ["-o", "junit_family=xunit1"]
    if args.keep_artifacts:
        argv.append("--testbed-keep-artifacts")
    if args.junit:
        argv.append(f"--junitxml={args.junit}")
    if args.keyword:
        argv += ["-k", args.keyword]
    if not getattr(args, "snapshot", True):
        argv.append("--testbed-no-snapshot")
    jobs = getattr(args, "jobs", 1)
    if jobs > 1:
        argv += ["-n", str(jobs), "--dist", "loadgroup"]
    shard: Shard | None = getattr(args, "shard", None)
    if shard is not None:
        argv.append(f"--testbed-shard={shard}")
        argv += ["-o", f"junit_suite_name=p2p-testbed-shard-{shard.index}-of-{shard.total}"]
    for option in ("kernel", "modules", "build", "accel", "boot_timeout", "machine"):
        value = getattr(args, option, None)
        if value is not None:
            argv.append(f"--testbed-{option.replace('_', '-')}={value}")
    return argv


class _Stop:
    """Which signal stopped the run, if one did."""

    signum: int | None = None


@contextmanager
def _signals_interrupt(stop: _Stop) -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt once (pytest then cleans up and reports);
    further signals during the clean-up are ignored rather than cutting it short."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.signum is not None:
            print(
                f"testbed: {signal.Signals(signum).name} again; still cleaning up", file=sys.stderr
            )
            return
        stop.signum = signum
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def main(args: argparse.Namespace) -> int:
    import pytest

    # Validate the kernel once, before pytest starts: a bad --kernel is one line and exit 2
    # (the CLI turns the TestbedError into that), not an error per test.
    if args.kernel is not None:
        kernel_from(args)
    collector = Collector()
    stop = _Stop()
    with _signals_interrupt(stop):
        try:
            code = pytest.main(pytest_args(args), plugins=[collector])
        except KeyboardInterrupt:  # a signal outside pytest's own session loop
            code = pytest.ExitCode.INTERRUPTED
            stop.signum = stop.signum or signal.SIGINT
        except TestbedError as exc:
            if stop.signum is None:
                raise
            # A fixture's clean-up after the signal failed (the interrupt can cut a guest
            # connection mid-command): the run was still stopped by the signal, and the
            # machines' own context managers have shut them down.
            print(f"testbed: clean-up after the signal: {exc}", file=sys.stderr)
            code = pytest.ExitCode.INTERRUPTED
        if code == pytest.ExitCode.INTERRUPTED:
            collector.interrupted()
        print()
        print(table(list(collector.rows.values()), collector.facts))
    if stop.signum is not None or code == pytest.ExitCode.INTERRUPTED:
        signum = stop.signum or signal.SIGINT
        print(f"testbed: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("testbed: error: no tests were collected from", SUITE)
        return 1
    return int(code)
