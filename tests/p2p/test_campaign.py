"""Campaigns on real guests: the reference drivers pass; the planted race is found, shrunk
to a few steps and replayed from its repro.yaml.

These drive the engine behind ``testbed campaign``/``testbed repro`` (same classes, same
plan) with the suite's kernel and payload, so a ``--testbed-kernel`` run tests that kernel.
"""

from __future__ import annotations

import io
from pathlib import Path

from testbed.kernel.image import Kernel
from testbed.p2p.payload import Payload
from testbed.scenario import faults, repro
from testbed.scenario.campaign import Campaign, Options, Pool, Progress, with_params

#: p2p_exporter's planted race (default off): remove() zaps, waits this long, then marks
#: the device dead; a DMA that maps again in between keeps its mapping.
PLANTED = {"p2p_exporter.plant_race_ms": "300"}


def _campaign(
    kernel: Kernel, payload: Payload, folder: Path, options: Options
) -> tuple[Campaign, Pool, io.StringIO]:
    out = io.StringIO()
    pool = Pool(kernel, payload, folder / "guests")
    return Campaign(pool, folder, options, Progress(0, out)), pool, out


def test_reference_drivers_pass_a_short_campaign(
    testbed_kernel: Kernel, p2p_payload: Payload, artifact_dir: Path
) -> None:
    plan = faults.plan(7, 6)
    campaign, pool, out = _campaign(testbed_kernel, p2p_payload, artifact_dir, Options(seed=7))
    try:
        report = campaign.run(plan)
    finally:
        pool.close()
    assert report.runs == 6
    assert not report.failed, out.getvalue()
    assert pool.boots < report.runs, "clean guests are reused"


def test_planted_race_is_found_shrunk_and_replayed(
    testbed_kernel: Kernel, p2p_payload: Payload, artifact_dir: Path
) -> None:
    plan = with_params(faults.plan(7, 50), PLANTED)
    options = Options(seed=7, shrink_budget=12, max_failures=1)
    campaign, pool, out = _campaign(testbed_kernel, p2p_payload, artifact_dir, options)
    try:
        report = campaign.run(plan)
    finally:
        pool.close()
    assert len(report.failed) == 1, out.getvalue()
    folder = report.failed[0]
    data = repro.load(folder / "repro.yaml")
    assert repro.signature(data.failures) & {"late-dma", "remove-gave-up"}, data.failures
    assert len(data.scenario.steps) <= 4, repro.describe(data.scenario)
    assert data.scenario.params == PLANTED
    assert data.kernel["release"] == testbed_kernel.release and data.kernel["image-sha256"]
    assert data.qemu_cmdline.startswith(("qemu-system", "/usr/bin/qemu-system"))
    assert (folder / data.original).is_file() and (folder / "console.log").is_file()
    failed, tries = map(int, data.rate.split("/"))
    assert failed >= 2 and tries == 3, f"the minimal scenario must fail reliably: {data.rate}"

    replay, pool, out = _campaign(
        testbed_kernel, p2p_payload, artifact_dir / "replay", Options(shrink=False, rate_runs=0)
    )
    try:
        again = replay.run([repro.load(folder / "repro.yaml").scenario])
    finally:
        pool.close()
    assert len(again.failed) == 1, out.getvalue()
