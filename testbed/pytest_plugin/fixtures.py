"""Fixtures: the kernel under test, a folder per test, and booted machines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.devices.registry import load_machine
from testbed.kernel.image import Kernel
from testbed.pytest_plugin import health
from testbed.pytest_plugin.settings import Settings, from_config
from testbed.pytest_plugin.state import ARTIFACTS, folder_name, watch
from testbed.qemu.machine import Machine


@pytest.fixture(scope="session")
def testbed_settings(pytestconfig: pytest.Config) -> Settings:
    """This run's ``--testbed-*`` options, parsed once (kernel, accel, artifacts, timeouts)."""
    return from_config(pytestconfig)


@pytest.fixture(scope="session")
def testbed_kernel(testbed_settings: Settings) -> Kernel:
    """The kernel under test (fetched into the cache on first use)."""
    return testbed_settings.kernel()


@pytest.fixture
def artifact_dir(request: pytest.FixtureRequest, testbed_settings: Settings) -> Path:
    """This test's own artifact folder, emptied at the start of the test."""
    path = testbed_settings.artifacts / folder_name(request.node.nodeid)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)  # what an untrusted guest wrote: ours only
    request.node.stash[ARTIFACTS] = path
    return path


class MachineFactory:
    """Boots machines for one test and shuts every one of them down afterwards.

    ``factory("native-hotplug", kernel_args=[...])`` boots the named machine (or a YAML path)
    with its artifacts in ``<artifact_dir>/<label>``; extra keyword arguments go to
    :class:`testbed.qemu.machine.Machine`.
    """

    def __init__(self, item: pytest.Item, settings: Settings, kernel: Kernel, folder: Path) -> None:
        self._item = item
        self._settings = settings
        self._kernel = kernel
        self._folder = folder
        self.machines: list[Machine] = []

    def __call__(
        self, name: str | Path = "default", *, label: str | None = None, **kwargs: Any
    ) -> Machine:
        definition = load_machine(name)
        label = label or definition.spec.name
        if any(m.run_dir.name == label for m in self.machines):
            label = f"{label}-{len(self.machines)}"
        kwargs.setdefault("accel", self._settings.accel)
        kwargs.setdefault("boot_timeout", self._settings.boot_timeout)
        kernel = kwargs.pop("kernel", self._kernel)
        machine = Machine(definition, kernel, self._folder / label, **kwargs)
        self.machines.append(machine)
        machine.start()
        watch(self._item, label, machine, from_now=False)
        return machine

    def close(self) -> None:
        for machine in reversed(self.machines):
            machine.shutdown()


@pytest.fixture
def machine_factory(
    request: pytest.FixtureRequest,
    testbed_settings: Settings,
    testbed_kernel: Kernel,
    artifact_dir: Path,
) -> Iterator[MachineFactory]:
    """Boot machines for this test: ``machine_factory("native-hotplug", kernel_args=[...])``
    (a machine name or a YAML path; keywords go to :class:`testbed.qemu.machine.Machine`).
    Every machine is shut down after the test and its console checked for problems."""
    factory = MachineFactory(request.node, testbed_settings, testbed_kernel, artifact_dir)
    try:
        yield factory
    finally:
        factory.close()
    # What a console printed between the end of the test body and the shutdown (a WARNING
    # from a late workqueue, say) still counts against the test.
    health.check(request.node, health.watched(request.node, factory.machines))


@pytest.fixture
def vm(machine_factory: MachineFactory) -> Machine:
    """The default machine (ACPI hotplug, one GPU exporter, one importer), booted."""
    return machine_factory("default")
