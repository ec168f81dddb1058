"""``testbed run``: the main job -- the reference P2P suite on a kernel, then a results table.

It runs the pytest suite in ``tests/p2p/`` (one test per claim of the reference RFC, plus the
hot-unplug extras) through pytest itself, so the same tests run from ``pytest`` directly, and
prints one row per test: the claim it checks, its name, the result and its duration.

``-j N`` runs the tests on N pytest-xdist workers, each booting guests of its own (artifact
folders stay one per test; a module's shared-guest tests stay on one worker). ``--shard I/N``
runs the I-th of N deterministic parts, for a CI matrix; its JUnit suite is named after the
shard so the N files merge.

``--kselftest mm/hmm-tests`` runs an upstream kselftest program in a guest instead (with
``--p2p``: besides the suite), built from the source of the named ``--kernel``: each of its
tests is a row of its own (``hmm-tests.<name>``) and a JUnit testcase, with the result the
program printed (the ``# SKIP`` reason as the skip message); the ``hmm-tests`` row is the
program as a whole (finished, clean TAP, exit status, console). Its raw output is kept in
``<artifacts>/kselftest-mm-hmm-tests/``. ``--ktap FILE`` writes the whole run as KTAP v1: a
result per suite test and per kselftest program, the program's tests nested under it.

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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from testbed import paths
from testbed.cli.common import add_boot_options, add_kernel_options, kernel_from, positive_int
from testbed.errors import TestbedError

if TYPE_CHECKING:
    import pytest

    from testbed.pytest_plugin.parallel import Shard

SUITE = paths.suite_dir()
_CLAIM = re.compile(r"claim(\d+)")
#: node ids of kselftest items (testbed.pytest_plugin.kselftest)
KSELFTEST_NODE = "kselftest/"


@dataclass
class Row:
    claim: str
    test: str
    result: str
    seconds: float
    nodeid: str = field(default="", compare=False)
    #: the skip reason, or the failure / error report
    message: str = field(default="", compare=False)


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
        claim = f"claim{match.group(1)}" if match else "-"
        if nodeid.startswith(KSELFTEST_NODE):
            claim = "kselftest"
        return self.rows.setdefault(nodeid, Row(claim, name, "passed", 0.0, nodeid))

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
            if row.result not in ("ERROR", "FAILED"):
                row.message = report.longreprtext
            row.result = "ERROR" if report.when != "call" else "FAILED"
        elif report.skipped and row.result == "passed":
            row.result = "skipped"
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                row.message = str(longrepr[2]).removeprefix("Skipped: ")


def context(facts: dict[str, set[str]]) -> str:
    """``path: vm_ops, machine: switch`` -- what the table's results were obtained on. A run
    whose guests loaded no P2P drivers (``--kselftest`` alone) has no path to name."""
    path = "/".join(sorted(facts.get("p2p_path", ()))) or "none (no P2P drivers loaded)"
    machine = "/".join(sorted(facts.get("machine", ()))) or "?"
    return f"path: {path}, machine: {machine}"


def table(rows: list[Row], facts: dict[str, set[str]] | None = None) -> str:
    # claims in order, then the other tests, each group in the order they ran
    rows = sorted(rows, key=lambda r: int(r.claim[5:]) if _CLAIM.fullmatch(r.claim) else 1 << 30)
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
        "--kselftest",
        action="append",
        metavar="DIR/PROG",
        help="run this upstream kselftest (e.g. mm/hmm-tests, from guest-kernel-config/"
        "kselftests/) in a guest instead of the P2P suite, one row per test; repeatable. "
        "Needs a named --kernel whose config has what it needs (--kernel hmm)",
    )
    p.add_argument("--p2p", action="store_true", help="with --kselftest: run the P2P suite as well")
    p.add_argument("--ktap", metavar="FILE", type=Path, help="also write the run as KTAP v1 here")
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
        type=positive_int,
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


def _shard(text: str) -> Shard:
    # the plugin package imports pytest and the machine: only when --shard is given
    from testbed.pytest_plugin.parallel import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def kselftest_paths(args: argparse.Namespace) -> list[Path]:
    """The kselftest files ``--kselftest`` names (an unknown name lists the known ones)."""
    from testbed.config.kselftests import spec_path

    names = getattr(args, "kselftest", None) or ()
    return [spec_path(paths.kernel_config_dir(), name) for name in names]


def pytest_args(args: argparse.Namespace) -> list[str]:
    selftests = [str(p) for p in kselftest_paths(args)]
    targets = [*selftests, str(SUITE)] if getattr(args, "p2p", False) else selftests
    argv = [*(targets or [str(SUITE)]), "-p", "no:cacheprovider", "-q"]
    argv.append(f"--testbed-artifacts={args.artifacts}")
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


_KTAP_STATUS = {
    # result -> (ok, directive)
    "passed": (True, None),
    "skipped": (True, "SKIP"),
    "FAILED": (False, None),
    "ERROR": (False, "ERROR"),
    "interrupted": (False, "ERROR"),
}


def _ktap_case(number: int, name: str, row: Row | None, subtests: Any = None) -> Any:
    from testbed import ktap

    if row is None:  # a program whose own row was deselected: ok if its tests are
        bad = subtests is not None and any(
            c.status in (ktap.Status.FAIL, ktap.Status.ERROR) for c in subtests.results
        )
        return ktap.Case(number, name, not bad, subtests=subtests)
    ok, directive = _KTAP_STATUS.get(row.result, (False, "ERROR"))
    message = [line.rstrip() for line in row.message.splitlines()]
    if row.result == "skipped":
        return ktap.Case(number, name, ok, directive, row.message.strip(), subtests=subtests)
    reason = row.result if row.result == "interrupted" else ""
    return ktap.Case(
        number, name, ok, directive, reason, diagnostics=tuple(message), subtests=subtests
    )


def ktap_report(rows: list[Row]) -> Any:
    """The run as a :class:`testbed.ktap.Suite`: a result per suite test and per kselftest
    program (``hmm-tests``), with the program's tests as its subtests, in table order."""
    from testbed import ktap

    cases: list[ktap.Case] = []
    programs: dict[str, tuple[Row | None, list[Row]]] = {}
    order: list[tuple[str, Row | None]] = []  # ("", row) for suite rows, (program, None)
    for row in rows:
        if row.nodeid.startswith(KSELFTEST_NODE):
            program = row.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            if program not in programs:
                programs[program] = (None, [])
                order.append((program, None))
            _, tests = programs[program]
            if row.test == program:
                programs[program] = (row, tests)
            else:
                tests.append(row)
        else:
            order.append(("", row))
    for program, suite_row in order:
        number = len(cases) + 1
        if not program:
            assert suite_row is not None
            cases.append(_ktap_case(number, suite_row.test.replace("#", "_"), suite_row))
            continue
        own, tests = programs[program]
        sub = [
            _ktap_case(i, r.test.removeprefix(f"{program}.").replace("#", "_"), r)
            for i, r in enumerate(tests, 1)
        ]
        nested = ktap.Suite(tuple(sub), plan=len(sub), name=program, version="KTAP version 1")
        cases.append(_ktap_case(number, program, own, nested))
    return ktap.Suite(tuple(cases), plan=len(cases), version="KTAP version 1")


def write_ktap(path: Path, rows: list[Row]) -> None:
    from testbed import ktap

    path.write_text(ktap.dump(ktap_report(rows)))


def main(args: argparse.Namespace) -> int:
    import pytest

    # Validate the kernel once, before pytest starts: a bad --kernel is one line and exit 2
    # (the CLI turns the TestbedError into that), not an error per test.
    kernel = kernel_from(args) if args.kernel is not None else None
    if getattr(args, "kselftest", None):
        _check_kselftests(args, kernel)
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
        rows = list(collector.rows.values())
        print(table(rows, collector.facts))
        if getattr(args, "ktap", None):
            write_ktap(args.ktap, rows)
    if stop.signum is not None or code == pytest.ExitCode.INTERRUPTED:
        signum = stop.signum or signal.SIGINT
        print(f"testbed: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("testbed: error: no tests were collected from", SUITE)
        return 1
    return int(code)


def _check_kselftests(args: argparse.Namespace, kernel: Any) -> None:
    """Before pytest: each kselftest exists, the kernel is a named one that has what it needs
    (a TestbedError here is one line and exit 2, in seconds, naming the kernel and the fix)."""
    from testbed.config.kselftests import load_kselftest
    from testbed.kselftest import guest
    from testbed.kselftest.build import build_program

    for path in kselftest_paths(args):
        spec = load_kselftest(path)
        request = guest.request_for(args.kernel, spec)
        if kernel is not None:
            guest.check_kernel(spec, kernel, args.kernel)
        # built (or found in the cache) and listed here, so that pytest's collection finds it
        # ready: a compile error is this command's error, not a collection error
        program = build_program(spec, request)
        how = f"built in {program.build_seconds:.1f} s" if program.build_seconds else "cached"
        print(f"testbed: kselftest {spec.name}: {len(program.tests)} tests ({how})")
