"""``testbed regress``: what a patch series changed -- the same tests on base and on patched.

Builds (or takes from the cache) both kernels, runs the same selection on each (``-k``,
``--machine``, and any ``testbed run`` option after ``--``, e.g. ``-- --kselftest
mm/hmm-tests``), ``--repeat N`` times per side, each run a bounded ``testbed run`` child with
its own JUnit file and artifact folder, then prints one row per test: ``regression``
(pass->fail), ``fix`` (fail->pass), ``unchanged``, ``flaky`` (failed some of the N runs on a
side: reported with the rates, never as a regression), ``skip-change``, ``new``/``gone``.

  testbed regress                                   # base vs patched, the whole suite
  testbed regress --series guest-kernel-config/patches/demo-buggy-unmap -k claim4
  testbed regress --patched as-posted --repeat 3 --json out/summary.json

Writes under ``--out`` (default ``testbed-artifacts/regress``): ``base.xml`` and
``patched.xml`` (JUnit, each side's repeats merged), ``summary.json`` (keys documented in
:func:`testbed.regress.verdict.summary`), and ``base/run-I/``, ``patched/run-I/`` (each run's
JUnit, log and artifact folders).

Exit status: 0 no regression; 1 at least one regression; 3 no regression, but a run reported
no results (crashed, timed out, matched no test); 2 an error before the comparison (a kernel
that does not build, a bad option).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from testbed.cli.common import positive_int, positive_seconds

DEFAULT_OUT = Path("testbed-artifacts") / "regress"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "regress",
        help="run the same tests on a base and a patched kernel; report regressions and fixes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_selection_options(p)
    g = p.add_argument_group("the two kernels")
    g.add_argument(
        "--base",
        default="base",
        metavar="KERNEL",
        help="a kernel name, a kernel YAML file, 'stock' or a bzImage (default: %(default)s)",
    )
    side = g.add_mutually_exclusive_group()
    side.add_argument(
        "--patched",
        metavar="KERNEL",
        help="the kernel under test, as --base (default: patched)",
    )
    side.add_argument(
        "--series",
        metavar="DIR",
        type=Path,
        help="the kernel under test is --base plus this patch series (a folder with 'series')",
    )
    p.add_argument(
        "--json", metavar="FILE", type=Path, help="the JSON summary (default: OUT/summary.json)"
    )
    p.set_defaults(func=main)


def add_selection_options(p: argparse.ArgumentParser, *, keyword: bool = True) -> None:
    """The options ``regress`` and ``bisect`` share (bisect names its selection --test)."""
    if keyword:
        p.add_argument(
            "-k", dest="keyword", metavar="EXPR", help="only tests matching EXPR (as pytest -k)"
        )
    p.add_argument("--machine", help="the machine to run on, e.g. 'switch' (default: 'default')")
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        metavar="N",
        help="run the selection N times on each kernel; a test that fails some of the N runs "
        "is flaky (default: %(default)s)",
    )
    p.add_argument(
        "--run-timeout",
        type=positive_seconds,
        default=1800.0,
        metavar="S",
        help="bound on one 'testbed run' (default: %(default)g s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the JUnit files, the summary and each run's artifacts go",
    )
    p.add_argument(
        "run_args",
        nargs="*",
        metavar="-- RUN-OPTION",
        help="after '--': options passed to every 'testbed run' (e.g. --kselftest mm/hmm-tests)",
    )


def run_args(args: argparse.Namespace) -> tuple[str, ...]:
    extra = list(args.run_args or ())
    if extra and extra[0] == "--":
        extra = extra[1:]
    return tuple(extra)


def main(args: argparse.Namespace) -> int:
    from testbed.kernel import series as kseries
    from testbed.regress import results, runner, verdict

    started = time.monotonic()
    out = (args.out or DEFAULT_OUT).absolute()
    selection = runner.Selection(args.keyword, args.machine, run_args(args))

    print(f"regress: base kernel {args.base}", flush=True)
    base = runner.obtain(args.base)
    if args.series is not None:
        ser = kseries.load_series(args.series)
        request = runner.request_for_name(args.base)
        if request is None:
            from testbed.errors import ConfigError

            raise ConfigError(
                f"--series needs a --base built from source (a kernel name or YAML), "
                f"not {args.base!r}"
            )
        label = f"{args.base}+{ser.name}"
        print(f"regress: patched kernel {label} ({len(ser.patches)} patches)", flush=True)
        patched = runner.obtain_request(runner.with_series(request, ser, label), label)
    else:
        name = args.patched or "patched"
        print(f"regress: patched kernel {name}", flush=True)
        patched = runner.obtain(name)
    for side in (base, patched):
        how = "built" if side.built else "from the cache"
        print(f"regress: {side.label}: {side.kernel.release}, {how} ({side.seconds:.0f} s)")

    shutil.rmtree(out / "base", ignore_errors=True)
    shutil.rmtree(out / "patched", ignore_errors=True)
    runs = {}
    for key, side in (("base", base), ("patched", patched)):
        print(f"regress: {side.label}: {args.repeat} run(s) of the selection", flush=True)
        runs[key] = runner.run_repeats(
            side.kernel,
            selection,
            out / key,
            args.repeat,
            label=side.label,
            timeout=args.run_timeout,
        )
        (out / f"{key}.xml").write_text(
            results.merged_junit([r.junit for r in runs[key]], f"{key}: {side.label}")
        )

    rows = verdict.compare(
        results.rates(runner.completed(runs["base"])),
        results.rates(runner.completed(runs["patched"])),
    )
    complete = all(r.cases is not None for side_runs in runs.values() for r in side_runs)
    code = verdict.exit_code(rows, complete)
    print()
    print(verdict.table(rows, base.label, patched.label))
    for key, side_runs in runs.items():
        for i, run in enumerate(side_runs, start=1):
            if run.cases is None:
                print(f"regress: {key} run {i} reported no results: {run.note}")
    for row in rows:
        if row.change is verdict.Change.REGRESSION:
            failing = [
                r
                for r in runs["patched"]
                if r.cases and row.test in r.cases and r.cases[row.test].outcome.broke
            ]
            where = failing[0].artifact_folder(row.test) if failing else out / "patched"
            print(f"regress: REGRESSION {results.short(row.test)}: artifacts under {where}")
    wall = time.monotonic() - started
    sides = {
        key: {
            "kernel": {"label": side.label, "release": side.kernel.release},
            "built": side.built,
            "build_seconds": round(side.seconds, 1),
            "junit": str(out / f"{key}.xml"),
            "runs": [r.as_json() for r in runs[key]],
        }
        for key, side in (("base", base), ("patched", patched))
    }
    summary = verdict.summary(
        rows,
        sides=sides,
        repeat=args.repeat,
        selection=selection.as_json(),
        complete=complete,
        wall_seconds=wall,
    )
    json_path = (args.json or out / "summary.json").absolute()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    builds = sum(s.built for s in (base, patched))
    print(
        f"regress: {builds} kernel build(s), wall time {wall:.0f} s; JUnit {out / 'base.xml'}, "
        f"{out / 'patched.xml'}; summary {json_path}; exit {code}"
    )
    return code
