"""``testbed repro FILE``: replay a failing run's ``repro.yaml`` (or any scenario file).

::

    testbed repro testbed-artifacts/campaign/seed-3/run-004-.../repro.yaml --repeat 5
    testbed repro scenarios/claims/claim5-unplug-zaps.yaml --keep

``--repeat N`` runs the scenario N times (on one guest while it stays clean) and reports how
often it failed; ``--keep`` leaves the guest of the last run running as that run left it
(failed or not) and prints its SSH command and QMP socket until Ctrl-C. The exit status is 1
when the scenario failed at least once (it reproduced), 0 when it passed every time.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from testbed.cli.common import accel_from, add_kernel_options, kernel_from
from testbed.errors import ConfigError

if TYPE_CHECKING:
    from testbed.scenario.campaign import CampaignReport


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "repro",
        help="replay a repro.yaml (or scenario file); --repeat N, --keep",
        description="Replay the scenario of a repro.yaml written by a failing campaign run, "
        "or any scenario file, and say whether (how often) it fails.",
    )
    p.add_argument("file", type=Path, help="repro.yaml or a scenario file")
    p.add_argument("--repeat", type=int, default=1, help="run it N times (default 1)")
    p.add_argument(
        "--keep", action="store_true", help="leave the guest running afterwards (Ctrl-C ends)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("testbed-artifacts/repro"),
        help="folder for the runs' artifacts (failing runs keep theirs)",
    )
    add_kernel_options(p)
    p.set_defaults(func=main)


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    # loaded here, not with the parser: see testbed.cli.campaign
    from testbed.p2p.payload import payload
    from testbed.scenario import repro
    from testbed.scenario.campaign import Campaign, Options, Pool, Progress

    signal.signal(signal.SIGTERM, _term_as_interrupt)
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {args.repeat}")
    data = repro.load(args.file)
    scenario = data.scenario
    kernel = kernel_from(args)
    want = data.kernel.get("release")
    if want and want != kernel.release:
        print(
            f"testbed repro: note: recorded on kernel {want}, replaying on {kernel.release}",
            file=sys.stderr,
        )
    if data.rate:
        print(f"recorded: fails {data.rate}; failures then: {'; '.join(data.failures)[:300]}")
    print(f"replaying {scenario.name} ({len(scenario.steps)} steps): {repro.describe(scenario)}")
    folder = args.out / repro.slug(scenario.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool = Pool(kernel, payload(kernel), folder / "guests", accel=accel_from(args), live=1)
    progress = Progress(args.repeat)
    campaign = Campaign(pool, folder, Options(shrink=False, rate_runs=0), progress)
    last: CampaignReport | None = None
    try:
        report = campaign.run([scenario] * (args.repeat - 1), numbers=list(range(1, args.repeat)))
        if args.keep:  # the last run leaves its guest as it is, failed or not
            campaign.options = dataclasses.replace(campaign.options, keep_guest=True)
        last = campaign.run([scenario], numbers=[args.repeat])
        report.runs += last.runs
        report.failed += last.failed
        progress.close()
        failed = len(report.failed)
        print(f"reproduced {failed}/{report.runs} (failed {failed} of {report.runs} runs)")
        for path in report.failed:
            print(f"  {path / 'run.log'}")
        if args.keep:
            vm, _ = pool.get(scenario)
            info = vm.info()
            print(
                f"guest kept running:\n  ssh:      {info['ssh']}\n  QMP:      "
                f"{info['qmp_socket']}\n  console:  {info['console_log']}\nCtrl-C stops it.",
                flush=True,
            )
            assert vm.process is not None
            while vm.process.wait(1.0) is None:
                pass
    finally:
        if args.keep and last is not None and last.failed and scenario.boot_key in pool.guests:
            pool.discard(scenario.boot_key, keep_in=last.failed[0])  # its artifacts, at last
        pool.close()
        shutil.rmtree(folder / "guests", ignore_errors=True)
    return 1 if report.failed else 0
