"""P2P fixtures: guests with the P2P drivers (``p2p_exporter``, ``p2p_importer``) and
``p2pctl`` loaded -- what the reference suite in ``tests/p2p/`` uses, public for users' tests.

- ``p2p_payload`` (session): the drivers and ``p2pctl`` built against the kernel under test
  (cached by content);
- ``p2p_vm``: the test module's shared guest (the machine ``--testbed-machine`` names,
  ``default`` unless told), checked clean before each test and put back to the driver defaults
  after it -- for tests that leave the devices in place;
- ``fresh_p2p_vm``: a callable booting a guest of the test's own with the drivers,
  ``fresh_p2p_vm()`` (that same machine) or ``fresh_p2p_vm("native-hotplug")`` -- for tests
  that unplug a device or break a driver.
  ``fresh_p2p_vm()`` on the default machine (no other arguments) resumes ``p2p_snapshot``,
  the default guest booted and saved once per session (per xdist worker): a fresh QEMU with
  its own folders, in well under a second instead of a boot (``--testbed-no-snapshot``
  boots each one instead).

Every guest these fixtures boot reports which path its drivers were built for
(``/sys/module/p2p_*/parameters/path``: ``vm_ops`` when the kernel has the RFC's
``vm_operations_struct`` members, else ``compat``); the run's summary line prints it.

Isolation. Before each test the shared guest is checked back to a clean state -- both devices
bound, no live p2p_map record (counted from the exporter's data in debugfs ``live``, and
agreeing with its counters), no importer reference held, no MR, no p2pctl process -- and the
test fails if an earlier one broke that, rather than passing on a dirty guest. Every guest,
shared or fresh, has its module parameters checked against the documented defaults right after
boot, before any test touches them (the teardown writes defaults back, which would hide a
changed default). Its console is checked per test from where the test started.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from testbed.deadline import Deadline
from testbed.devices.registry import load_machine
from testbed.guest import console, pci
from testbed.kernel.image import Kernel
from testbed.p2p import debugfs, params
from testbed.p2p.payload import Payload, driver_path, payload
from testbed.pytest_plugin.settings import Settings
from testbed.pytest_plugin.state import FACTS, folder_name, watch
from testbed.qemu import snapshot
from testbed.qemu.machine import Machine
from testbed.qemu.process import reaped_tempdir
from testbed.qemu.snapshot import SNAPSHOT_QEMU_ARGS, Saved

EXPORTER = "1af4:1110"  #: PCI vendor:device of the exporter (the ivshmem "GPU")
IMPORTER = "1234:11e8"  #: PCI vendor:device of the importer (the edu "NIC")


def _note_path(config: pytest.Config, vm: Machine) -> None:
    """Record the path ``vm``'s drivers use, for the summary and the JUnit properties."""
    config.stash[FACTS].p2p_paths.add(driver_path(vm.ssh))


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
    """The suite's machine with the P2P drivers, booted once per test module (what ``p2p_vm``
    hands out); its artifact folder is kept if any of its tests failed."""
    # one per pytest-xdist worker that runs tests of this module: folders of their own
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    name = f"{request.module.__name__}-shared-guest" + (f"-{worker}" if worker else "")
    folder = testbed_settings.artifacts / folder_name(name)
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


@pytest.fixture(scope="session")
def p2p_snapshot(
    request: pytest.FixtureRequest,
    testbed_settings: Settings,
    testbed_kernel: Kernel,
    p2p_payload: Payload,
) -> Iterator[Saved | None]:
    """The default machine with the drivers, booted once, checked at its defaults and saved
    (None with ``--testbed-no-snapshot``). The state lives in a reaped temporary folder."""
    if not testbed_settings.snapshot:
        yield None
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    folder = testbed_settings.artifacts / ("snapshot-guest" + (f"-{worker}" if worker else ""))
    shutil.rmtree(folder, ignore_errors=True)
    machine = Machine(
        load_machine("default"),
        testbed_kernel,
        folder,
        accel=testbed_settings.accel,
        boot_timeout=testbed_settings.boot_timeout,
        qemu_args=SNAPSHOT_QEMU_ARGS,
        **p2p_payload.machine_kwargs(),
    )
    with reaped_tempdir("p2p-testbed-snapshot-") as state:
        with machine:
            params.assert_defaults(machine.ssh, "freshly booted guest to save")
            # resumed guests' consoles start after the save: the boot is judged here, once
            console.raise_for_problems(
                console.ConsoleTail(machine.console_log).check_new(),
                source=f"console of the guest to save ({machine.console_log})",
            )
            saved = snapshot.save(machine, state, Deadline(120, "saving the default guest"))
        if not testbed_settings.keep_artifacts:
            shutil.rmtree(folder, ignore_errors=True)
        yield saved


@pytest.fixture
def fresh_p2p_vm(
    request: pytest.FixtureRequest,
    machine_factory: Callable[..., Machine],
    p2p_payload: Payload,
    testbed_settings: Settings,
) -> Callable[..., Machine]:
    """Boot a guest of its own with the drivers: ``fresh_p2p_vm()`` (the suite's machine),
    ``fresh_p2p_vm("native-hotplug")``; ``fresh_p2p_vm()`` on the default machine resumes
    the session's saved guest (see ``p2p_snapshot``) unless ``--testbed-no-snapshot``."""

    def boot(name: str | None = None, **kwargs: object) -> Machine:
        name = name or testbed_settings.machine
        # asked for only here: a run of native-hotplug tests boots no guest to save
        saved = request.getfixturevalue("p2p_snapshot") if name == "default" else None
        if saved is not None and not kwargs:
            vm = machine_factory(
                name,
                restore=saved,
                qemu_args=SNAPSHOT_QEMU_ARGS,
                **p2p_payload.machine_kwargs(),
            )
            params.assert_defaults(vm.ssh, "guest resumed from the saved default guest")
        else:
            vm = machine_factory(name, **p2p_payload.machine_kwargs(), **kwargs)
            params.assert_defaults(vm.ssh, f"freshly booted {name} guest")
        _note_path(request.config, vm)
        return vm

    return boot
