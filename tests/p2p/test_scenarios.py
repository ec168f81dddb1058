"""Claims 1, 3-8 run from scenario files through the scenario engine, on one guest.

The same engine runs campaigns; here it runs the hand-written claim scenarios in
``scenarios/claims/`` back to back on one booted guest (each leaves the guest clean, so the
next reuses it); and, on a guest of its own, one scenario the verdict must reject, so the
engine's verdict is seen to fail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testbed import paths
from testbed.guest.console import Problem
from testbed.qemu.machine import Machine
from testbed.scenario import loader
from testbed.scenario.runner import Runner

CLAIMS = paths.scenarios_dir() / "claims"

#: An importer that never unmaps (lazy_unmap) makes the exporter's remove give up at its
#: bound: the verdict must call that a failure unless the scenario allows it.
LAZY = """
name: lazy-importer
params: {p2p_importer.lazy_unmap: true, p2p_exporter.unplug_wait_ms: 1000}
steps:
  - app:
      name: user
      setup: [create size=64K, mmap, reg, dma-write len=64 pattern=1]
      then: [dereg]
  - unplug: {device: gpu-exporter, bound: 10}
  - go: {app: user}
"""


def test_claims_from_scenario_files(fresh_p2p_vm: Callable[..., Machine]) -> None:
    vm = fresh_p2p_vm("default")
    runner = Runner(vm)
    names = []
    for path in sorted(CLAIMS.glob("claim*.yaml")):
        scenario = loader.load(path)
        result = runner.run(scenario)
        assert result.passed, result.report() + "\n" + "\n".join(result.log)
        assert result.reusable, f"{path.name} left the guest unusable: {result.log}"
        names.append(scenario.name)
    assert names == [
        "claim1-map-lands",
        "claim3-invalidate-any-time",
        "claim4-eviction",
        "claim5-unplug-zaps",
        "claim6-unplug-waits",
        "claim7-gone",
        "claim8-refuse-pin",
    ]


@pytest.mark.console_allows(Problem.P2P_WARNING)  # the driver's warning is what is judged here
def test_the_verdict_rejects_an_importer_that_never_unmaps(
    fresh_p2p_vm: Callable[..., Machine],
) -> None:
    lazy = Runner(fresh_p2p_vm("default")).run(loader.load_text(LAZY))
    assert not lazy.passed
    assert any("gave up waiting for an importer 1 time(s)" in f for f in lazy.failures), (
        lazy.report()
    )
