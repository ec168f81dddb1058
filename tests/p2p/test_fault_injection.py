"""Kernel allocation failures around p2p_map and unplug (``scenarios/faults/``): failslab and
fail_page_alloc armed with task-filter, so only p2pctl's commands marked ``fail=1`` fail.

Needs a kernel with CONFIG_FAULT_INJECTION_DEBUG_FS, CONFIG_FAILSLAB and CONFIG_FAIL_PAGE_ALLOC
(``--testbed-kernel faults``: guest-kernel-config/faults.config; or a debug.config build); on
any other kernel the scenarios skip, and the test that runs instead checks that a scenario
asking for fault injection fails with an error naming those configs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testbed import paths
from testbed.kernel.image import Kernel
from testbed.qemu.machine import Machine
from testbed.scenario import faults, loader
from testbed.scenario.runner import Runner

FAULTS = paths.scenarios_dir() / "faults"


def _kinds(kernel: Kernel) -> tuple[str, ...]:
    config = kernel.config_path()
    return faults.injection_kinds(config.read_text()) if config is not None else ()


def test_allocation_failures_around_p2p_map_and_unplug_fail_cleanly(
    testbed_kernel: Kernel, fresh_p2p_vm: Callable[..., Machine]
) -> None:
    if _kinds(testbed_kernel) != faults.INJECTION_FAULTS:
        pytest.skip(
            f"kernel {testbed_kernel.release} has no failslab/fail_page_alloc debugfs "
            "(CONFIG_FAULT_INJECTION_DEBUG_FS, CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC): run "
            "with --testbed-kernel faults (guest-kernel-config/faults.config) or a "
            "debug.config kernel"
        )
    runner = Runner(fresh_p2p_vm("default"))
    injected: dict[str, dict[str, float]] = {}
    for path in sorted(FAULTS.glob("*.yaml")):
        scenario = loader.load(path)
        result = runner.run(scenario)
        assert result.passed, result.report() + "\n" + "\n".join(result.log)
        assert result.reusable, f"{path.name} left the guest unusable: {result.log}"
        injected[scenario.name] = {k: v for k, v in result.timings.items() if "injected" in k}
    # the deterministic scenario's three failures were injected (times=1, thrice), not skipped
    assert injected["faults-failslab-around-p2p-map"] == {"failslab_injected": 3}, injected


def test_a_scenario_asking_for_fault_injection_names_the_kernel_configs(
    testbed_kernel: Kernel, p2p_vm: Machine
) -> None:
    if _kinds(testbed_kernel):
        pytest.skip(f"kernel {testbed_kernel.release} has fault injection: the scenarios run")
    result = Runner(p2p_vm).run(loader.load(FAULTS / "1-failslab-around-p2p-map.yaml"))
    assert not result.passed
    assert result.steps_done == 0, result.report()
    (failure,) = result.failures
    assert "has no /sys/kernel/debug/failslab" in failure, failure
    assert "guest-kernel-config/debug.config" in failure and "--kernel faults" in failure
