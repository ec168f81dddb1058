"""Module load and unload as scenario steps (``scenarios/modules/``), on a guest of its own.

The drivers refuse to go while an app holds a mapping and an MR (rmmod: ``EAGAIN``); the
importer cannot load without the exporter (``ENOENT``, unknown symbols) nor twice
(``EEXIST``); both come back and work; and after the exporter device was unplugged, a reload
of both drivers plus a plug gives a working exporter again. Each outcome is the kernel's
errno, compared by the runner with the step's ``expect``.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed import paths
from testbed.qemu.machine import Machine
from testbed.scenario import loader
from testbed.scenario.runner import Runner

SCENARIO = paths.scenarios_dir() / "modules" / "unload-reload-drivers.yaml"


def test_drivers_unload_only_when_unused_and_reload_after_unplug(
    fresh_p2p_vm: Callable[..., Machine],
) -> None:
    runner = Runner(fresh_p2p_vm("default"))
    result = runner.run(loader.load(SCENARIO))
    assert result.passed, result.report() + "\n" + "\n".join(result.log)
    assert result.reusable, f"the guest was left unusable: {result.log}"
    # the step judges what the kernel answered: expecting the in-use exporter to unload fails
    wrong = runner.run(loader.load_text(WRONG))
    assert not wrong.passed
    assert "module unload p2p_exporter: expected ok, got EAGAIN" in wrong.report(), wrong.report()


WRONG = """
name: exporter-in-use-unloads
steps:
  - module: {unload: p2p_exporter}
"""
