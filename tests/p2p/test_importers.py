"""Two importers mapping one exporter object (machine ``two-importers``), through the
scenario engine: ``scenarios/importers/`` run back to back on one fresh guest.

One process maps the object once and registers that mapping with both edu devices
(``reg imp=importer2``). The scenarios check that an eviction, an invalidation during
in-flight DMA on both, and the exporter's unplug each invalidate BOTH importers (``mrinfo
want-valid=0`` on each, then each DMA follows the object or fails ``ENODEV``); that the
exporter's remove waits for both importers' ``p2p_unmap`` (lazy importers deregistered 2 s
apart; the run's remove-waits verdict); and that unplugging one importer leaves the other
working. An importer left un-invalidated fails its ``want-valid=0`` (and its next DMA lands
where the read does not look); a remove that waits for one importer only is mutant
``17-unplug-waits-for-one-importer``, which this test catches.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed import paths
from testbed.qemu.machine import Machine
from testbed.scenario import loader
from testbed.scenario.runner import Runner

IMPORTERS = paths.scenarios_dir() / "importers"


def test_two_importers_of_one_object_are_both_invalidated_and_waited_for(
    fresh_p2p_vm: Callable[..., Machine],
) -> None:
    vm = fresh_p2p_vm("two-importers")
    runner = Runner(vm)
    names = []
    for path in sorted(IMPORTERS.glob("*.yaml")):
        scenario = loader.load(path)
        result = runner.run(scenario)
        assert result.passed, result.report() + "\n" + "\n".join(result.log)
        assert result.reusable, f"{path.name} left the guest unusable: {result.log}"
        names.append(scenario.name)
    assert names == [
        "importers-evict-invalidates-both",
        "importers-exporter-unplug-invalidates-both",
        "importers-exporter-unplug-waits-for-both",
        "importers-importer-unplug-leaves-the-other",
        "importers-invalidate-in-flight-both",
    ]
