"""``testbed mutants``: plant each bug of the catalogue in the P2P drivers and run the suite.

Measures the suite's power: for every patch in ``qemu-devices/p2p/mutants/`` (one planted bug
per failure mode of the contract), copy the drivers to a temporary folder, apply it, build,
run the reference suite against that build, and record the tests that caught it. First the
suite runs once on the unmutated drivers (the baseline): a test that fails there proves
nothing. Prints a matrix mutant x tests and exits 0 only if every mutant was caught; a patch
that no longer applies or does not compile is reported as such, never as caught.

Slow (one suite run per mutant): CI runs it on a schedule (``ci/mutants.sh``), not per push.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed import paths
from testbed.cli.common import add_kernel_options, kernel_from
from testbed.errors import ImageError, ModuleBuildError, TestbedError
from testbed.guest.modules import build_p2p_modules, source_dir, source_files
from testbed.kernel.image import Kernel
from testbed.p2p import mutants as mut

log = logging.getLogger(__name__)

SUITE = paths.PROJECT_ROOT / "tests" / "p2p"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "mutants",
        help="plant each catalogued bug in the P2P drivers, run the suite, print who caught it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--catalogue",
        metavar="DIR",
        type=Path,
        help="folder of NN-name.patch files (default: qemu-devices/p2p/mutants/)",
    )
    p.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        default=[],
        help="only this mutant (name or its two-digit number); repeat for more",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the suite run on the unmutated drivers (then every failure counts)",
    )
    p.add_argument(
        "-k", dest="keyword", metavar="EXPR", help="only suite tests matching EXPR (pytest -k)"
    )
    p.add_argument(
        "--suite-timeout",
        metavar="S",
        type=float,
        default=1800.0,
        help="bound on one suite run (default: %(default)g s); past it: 'no result'",
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=Path("testbed-artifacts") / "mutants",
        help="one folder per mutant: pytest output, JUnit XML, failed tests' artifacts "
        "(default: %(default)s)",
    )
    add_kernel_options(p)
    p.set_defaults(func=main)


def _suite_argv(args: argparse.Namespace, folder: Path, tree: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q"]
    argv += [f"--testbed-artifacts={folder / 'tests'}", f"--junitxml={folder / 'junit.xml'}"]
    if tree is not None:
        argv.append(f"--testbed-p2p-src={tree}")
    if args.keyword:
        argv += ["-k", args.keyword]
    for option in ("kernel", "modules", "build", "accel"):
        value = getattr(args, option)
        if value is not None:
            argv.append(f"--testbed-{option}={value}")
    return argv


def run_suite(
    args: argparse.Namespace, folder: Path, tree: Path | None
) -> tuple[mut.SuiteResult | None, str]:
    """Run the suite in a child process (a fresh pytest per mutant) against ``tree``'s
    drivers (None: the checkout's); return its tests and a note on how it ended."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = _suite_argv(args, folder, tree)
    (folder / "command.txt").write_text(" ".join(argv) + "\n")
    with (folder / "pytest.log").open("w") as out:
        try:
            proc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=paths.PROJECT_ROOT,
                check=False,
                timeout=args.suite_timeout,
            )
            note = f"pytest exited {proc.returncode}"
        except subprocess.TimeoutExpired:
            note = f"the suite ran past --suite-timeout {args.suite_timeout:g} s"
    result = mut.parse_junit(folder / "junit.xml")
    if result is not None and not result.tests:
        result = None
    return result, f"{note}; see {folder / 'pytest.log'}"


def _build(kernel: Kernel, tree: Path) -> str | None:
    """Build the drivers in ``tree``; None, or why they do not build (first line)."""
    try:
        build_p2p_modules(kernel, src=tree)
    except (ModuleBuildError, ImageError) as exc:
        return str(exc).splitlines()[0]
    return None


def try_mutant(
    args: argparse.Namespace, kernel: Kernel, mutant: mut.Mutant, baseline_failed: tuple[str, ...]
) -> mut.Outcome:
    """Apply, build and run the suite on one mutant, in a temporary copy of the drivers."""
    started = time.monotonic()
    src = source_dir()
    with tempfile.TemporaryDirectory(prefix=f"p2p-mutant-{mutant.name}-") as tmp:
        tree = mut.copy_sources(src, source_files(src), Path(tmp) / "p2p")
        try:
            mut.apply(mutant, tree)
        except mut.MutantDoesNotApply as exc:
            return mut.Outcome(mutant.name, mut.Status.NOT_APPLYING, (), str(exc), 0.0)
        why = _build(kernel, tree)
        if why is not None:
            return mut.Outcome(
                mutant.name, mut.Status.NOT_COMPILING, (), why, time.monotonic() - started
            )
        result, note = run_suite(args, args.artifacts / mutant.name, tree)
    return mut.judge(
        mutant.name,
        None if result is None else result.failed,
        baseline_failed,
        seconds=time.monotonic() - started,
        detail=note,
    )


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    catalogue = mut.catalogue(args.catalogue, args.only)
    kernel = kernel_from(args)
    args.artifacts = args.artifacts.absolute()
    baseline_failed: tuple[str, ...] = ()
    if not args.no_baseline:
        print(f"mutants: baseline: the suite on the unmutated drivers ({SUITE})", flush=True)
        why = _build(kernel, source_dir())
        if why is not None:
            raise TestbedError(f"the unmutated drivers do not build: {why}")
        result, note = run_suite(args, args.artifacts / "baseline", None)
        if result is None:
            raise TestbedError(f"the baseline suite run reported no tests ({note})")
        baseline_failed = result.failed
        print(f"mutants: baseline: {len(result.tests)} tests, {len(result.failed)} failed")
        for test in result.failed:
            print(f"mutants: warning: {test} fails without any mutant; it counts for none")
    outcomes = []
    for n, mutant in enumerate(catalogue, start=1):
        print(f"mutants: [{n}/{len(catalogue)}] {mutant.name}: {mutant.plants}", flush=True)
        outcome = try_mutant(args, kernel, mutant, baseline_failed)
        outcomes.append(outcome)
        caught = ", ".join(mut.short_test(t) for t in outcome.caught_by)
        print(
            f"mutants: [{n}/{len(catalogue)}] {mutant.name}: {outcome.status.value}"
            + (f" by {caught}" if caught else f" ({outcome.detail})" if outcome.detail else "")
            + f" in {outcome.seconds:.0f} s",
            flush=True,
        )
    print()
    print(mut.matrix(outcomes))
    print(f"wall time: {time.monotonic() - started:.0f} s")
    return mut.exit_code(outcomes)
