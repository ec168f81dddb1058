"""Fixtures of the reference suite: guests with the P2P drivers loaded.

Machine and path. The suite runs on one machine, ``--testbed-machine`` (``default``: devices on
separate root ports; ``switch``: both under one PCIe switch). Every guest reports which path its
drivers were built for (``/sys/module/p2p_*/parameters/path``: ``vm_ops`` when the kernel has
the RFC's ``vm_operations_struct`` members, else ``compat``); each test records both as JUnit
properties, the session records them as testsuite properties, the summary prints them.

Isolation. Tests that leave the devices in place share one guest per module (``p2p_vm``);
before each of them the fixture checks the guest is back to a clean state -- both devices
bound, no live p2p_map record (counted from the exporter's data in debugfs ``live``, and
agreeing with its counters), no importer reference held, no MR, no p2pctl process -- and fails
the test if an earlier one broke that, rather than letting it pass on a dirty guest. Every
guest, shared or fresh, has its module parameters checked against the documented defaults
right after boot, before any test touches them (the teardown writes defaults back, which
would hide a changed default). Its console is checked per test from where the test started.
Tests that unplug a device, or need a misbehaving driver, boot their own guest
(``fresh_p2p_vm``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from testbed.devices.registry import load_machine, machine_names
from testbed.guest import pci
from testbed.kernel.image import Kernel
from testbed.p2p import debugfs, params
from testbed.p2p.payload import Payload, driver_path, payload
from testbed.pytest_plugin.settings import Settings, from_config
from testbed.pytest_plugin.state import FACTS, folder_name, watch
from testbed.qemu.machine import Machine

EXPORTER = "1af4:1110"
IMPORTER = "1234:11e8"


def _note_path(config: pytest.Config, vm: Machine) -> None:
    config.stash[FACTS].p2p_paths.add(driver_path(vm.ssh))


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


@pytest.fixture(scope="session")
def p2p_payload(testbed_kernel: Kernel, testbed_settings: Settings) -> Payload:
    """The drivers and p2pctl, built against the kernel under test (cached)."""
    return payload(testbed_kernel, testbed_settings.p2p_src)


@pytest.fixture(scope="module")
def shared_p2p_machine(
    request: pytest.FixtureRequest,
    testbed_settings: Settings,
    testbed_kernel: Kernel,
    p2p_payload: Payload,
) -> Iterator[Machine]:
    folder = testbed_settings.artifacts / folder_name(f"{request.module.__name__}-shared-guest")
    shutil.rmtree(folder, ignore_errors=True)
    machine = Machine(
        load_machine(testbed_settings.machine),
        testbed_kernel,
        folder,
        accel=testbed_settings.accel,
        boot_timeout=testbed_settings.boot_timeout,
        **p2p_payload.machine_kwargs(),
    )
    with machine:
        params.assert_defaults(machine.ssh, "freshly booted shared guest")
        _note_path(request.config, machine)
        yield machine
    facts = request.config.stash[FACTS]
    if folder in facts.kept or testbed_settings.keep_artifacts:
        return
    shutil.rmtree(folder, ignore_errors=True)


def _assert_clean(vm: Machine) -> None:
    assert pci.find(vm.ssh, EXPORTER) and pci.find(vm.ssh, IMPORTER), "a device is missing"
    stray = vm.ssh.run("pidof p2pctl").stdout.strip()
    assert not stray, f"p2pctl processes left over by an earlier test: {stray}"
    exporter, importer = debugfs.exporter_stats(vm.ssh), debugfs.importer_stats(vm.ssh)
    live = debugfs.live(vm.ssh)
    assert live.idle, f"p2p_map records or importer references left over: {live}"
    assert not debugfs.balance_problems(live, exporter), debugfs.balance_problems(live, exporter)
    assert exporter["imports"] == 0, f"live p2p_map records left over: {exporter}"
    assert exporter["maps"] == exporter["unmaps"], f"maps and unmaps do not balance: {exporter}"
    assert importer["mrs"] == 0, f"MRs left over: {importer}"


@pytest.fixture
def p2p_vm(request: pytest.FixtureRequest, shared_p2p_machine: Machine) -> Iterator[Machine]:
    """The module's shared guest, checked clean; restored to defaults afterwards."""
    vm = shared_p2p_machine
    watch(request.node, "shared guest", vm, from_now=True)
    _assert_clean(vm)
    yield vm
    vm.ssh.run("killall -q p2pctl; rm -f /tmp/p2pctl-*")
    params.set_values(vm.ssh, params.RESETTABLE)


@pytest.fixture
def fresh_p2p_vm(
    request: pytest.FixtureRequest,
    machine_factory: Callable[..., Machine],
    p2p_payload: Payload,
    testbed_settings: Settings,
) -> Callable[..., Machine]:
    """Boot a guest of its own with the drivers: ``fresh_p2p_vm()`` (the suite's machine),
    ``fresh_p2p_vm("native-hotplug")``."""

    def boot(name: str | None = None, **kwargs: object) -> Machine:
        vm = machine_factory(
            name or testbed_settings.machine, **p2p_payload.machine_kwargs(), **kwargs
        )
        _note_path(request.config, vm)
        params.assert_defaults(vm.ssh, f"freshly booted {name or testbed_settings.machine} guest")
        return vm

    return boot
