"""The reference suite's own fixtures; the P2P guests come from the plugin
(:mod:`testbed.pytest_plugin.p2p`: ``p2p_vm``, ``fresh_p2p_vm``, ``p2p_payload``).

Machine and path. The suite runs on one machine, ``--testbed-machine`` (``default``: devices on
separate root ports; ``switch``: both under one PCIe switch); hot-unplug tests that take a
``machine`` argument run on it and on its native-hotplug twin. Every guest reports which path
its drivers were built for (``vm_ops`` or ``compat``); each test records the machine and the
path as JUnit properties, the session records them as testsuite properties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from testbed.devices.registry import machine_names
from testbed.pytest_plugin.settings import Settings, from_config
from testbed.pytest_plugin.state import FACTS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``machine`` parameters: the suite's machine, and its native-hotplug twin next to it
    (``<machine>-native`` where one exists, e.g. ``switch-native``; else ``native-hotplug``)."""
    if "machine" in metafunc.fixturenames:
        suite = from_config(metafunc.config).machine
        twin = f"{suite}-native" if f"{suite}-native" in machine_names() else "native-hotplug"
        metafunc.parametrize("machine", list(dict.fromkeys([suite, twin])))


@pytest.fixture(autouse=True)
def _record_path_and_machine(
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
    testbed_settings: Settings,
) -> Iterator[None]:
    yield
    record_property("machine", testbed_settings.machine)
    record_property("p2p_path", ",".join(sorted(request.config.stash[FACTS].p2p_paths)))


@pytest.fixture(scope="session", autouse=True)
def _record_suite_path_and_machine(
    request: pytest.FixtureRequest,
    record_testsuite_property: Callable[[str, object], None],
    testbed_settings: Settings,
) -> Iterator[None]:
    yield
    record_testsuite_property("machine", testbed_settings.machine)
    record_testsuite_property("p2p_path", ",".join(sorted(request.config.stash[FACTS].p2p_paths)))
