"""``testbed campaign``: seeded random fault scenarios, run on pooled guests, judged, shrunk.

::

    testbed campaign --seed 7 --runs 20 --plan      # print the plan (YAML), run nothing
    testbed campaign --seed 7 --runs 20             # run it; exit 1 if any run failed
    testbed campaign --seed 3 --runs 50 --param p2p_exporter.plant_race_ms=300

The same seed gives the same scenarios in the same order (:mod:`testbed.scenario.faults`).
Failing runs keep their folder under ``--out`` with a shrunk ``repro.yaml``; replay one with
``testbed repro``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from testbed.cli.common import accel_from, add_kernel_options, kernel_from
from testbed.errors import ConfigError
from testbed.scenario import faults
from testbed.scenario.model import Params


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "campaign",
        help="run seeded random hot-unplug fault scenarios; shrink and keep failures",
        description="Generate --runs scenarios from --seed (deterministic), run them on "
        "pooled guests, judge each run, and for every failure keep its folder with a shrunk "
        "repro.yaml.",
    )
    p.add_argument("--seed", type=int, required=True, help="the plan's seed")
    p.add_argument("--runs", type=int, default=20, help="how many scenarios (default 20)")
    p.add_argument("--plan", action="store_true", help="print the scenarios, run nothing")
    p.add_argument(
        "--faults",
        help=f"comma-separated fault kinds to draw from (default: {','.join(faults.FAULTS)}, "
        f"plus {','.join(faults.INJECTION_FAULTS)} when --kernel has fault injection, e.g. "
        "--kernel faults)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="MODULE.NAME=VALUE",
        help="a driver module parameter for every run, e.g. p2p_exporter.plant_race_ms=300",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("testbed-artifacts/campaign"),
        help="where failing runs keep their folders (default testbed-artifacts/campaign)",
    )
    p.add_argument("--no-shrink", action="store_true", help="keep failing scenarios as they are")
    p.add_argument(
        "--shrink-budget", type=int, default=20, help="most candidates tried per failure"
    )
    p.add_argument(
        "--max-failures", type=int, metavar="K", help="stop after K failing runs (default: never)"
    )
    p.add_argument("--guests", type=int, default=2, help="most guests alive at once (default 2)")
    add_kernel_options(p)
    p.set_defaults(func=main)


def parse_params(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected MODULE.NAME=VALUE")
        out[key] = value
    try:
        Params(out)
    except ValueError as exc:
        raise ConfigError(f"--param: {exc}") from None
    return out


def main(args: argparse.Namespace) -> int:
    # What acts (machines, SSH) loads here, not with the parser: every command pays for the
    # imports of every subcommand module (see testbed.cli.execute).
    from testbed.p2p.payload import payload
    from testbed.scenario import loader
    from testbed.scenario.campaign import Campaign, Options, Pool, Progress, with_params

    # Debian's stock kernel has no fault injection: only another --kernel is looked at (and
    # built if need be) before planning, so a stock --plan stays a pure function of the seed.
    kernel = kernel_from(args) if args.kernel not in (None, "stock") else None
    config = kernel.config_path() if kernel is not None else None
    available = faults.injection_kinds(config.read_text()) if config is not None else ()
    if args.faults is None:
        kinds = [*faults.FAULTS, *available]
    else:
        kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    missing = [k for k in kinds if k in faults.INJECTION_FAULTS and k not in available]
    if missing:
        raise ConfigError(
            f"--faults {','.join(missing)}: the kernel ({kernel.release if kernel else 'stock'}) "
            "has no fault injection for it (CONFIG_FAULT_INJECTION_DEBUG_FS, "
            + ", ".join(faults.INJECTION_OPTIONS[k] for k in missing)
            + "); use --kernel faults (guest-kernel-config/faults.config) or a kernel built "
            "with guest-kernel-config/debug.config"
        )
    try:
        scenarios = faults.plan(args.seed, args.runs, kinds)
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from None
    scenarios = with_params(scenarios, parse_params(args.param))
    if args.plan:
        for i, scenario in enumerate(scenarios, start=1):
            print(f"# run {i} of {len(scenarios)} (seed {args.seed})\n---")
            print(loader.dump(scenario), end="")
        return 0
    kernel = kernel or kernel_from(args)
    folder = args.out / f"seed-{args.seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    progress = Progress(len(scenarios))
    print(f"campaign: seed {args.seed}, {len(scenarios)} runs, kernel {kernel.release}; {folder}")
    pool = Pool(
        kernel, payload(kernel), folder / "guests", accel=accel_from(args), live=args.guests
    )
    options = Options(
        seed=args.seed,
        shrink=not args.no_shrink,
        shrink_budget=args.shrink_budget,
        max_failures=args.max_failures,
    )
    try:
        report = Campaign(pool, folder, options, progress).run(scenarios)
    finally:
        pool.close()
        progress.close()
        shutil.rmtree(folder / "guests", ignore_errors=True)
    print(
        f"campaign: {report.runs} runs, {report.passes} passed, {len(report.failed)} failed in "
        f"{report.seconds:.0f} s: {report.runs_per_minute:.1f} runs/min "
        f"({report.boots} boots, {report.boot_seconds:.0f} s booting)"
    )
    for path in report.failed:
        print(f"  failed: {path}  (testbed repro {path / 'repro.yaml'})")
    return 1 if report.failed else 0
