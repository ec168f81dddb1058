"""A user's own tests on the testbed's pytest plugin: no conftest.py, no setup code.

Installing p2p-testbed registers the plugin with pytest, so these fixtures are simply there:

- ``vm``: the default machine (q35, a GPU exporter and an importer, ACPI hotplug), booted;
- ``machine_factory``: boots any machine by name or YAML path, shut down after the test;
- ``p2p_vm`` / ``fresh_p2p_vm``: guests with the P2P drivers and ``p2pctl`` loaded.

Run them with ``pytest examples/user-tests`` (add ``--testbed-kernel PATH`` to test your own
kernel); each test's console log, QMP log and dmesg are kept under ``testbed-artifacts/``
when it fails. See docs/plugin.md.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed.deadline import Deadline
from testbed.devices import hotplug
from testbed.guest import pci
from testbed.p2p import ctl, debugfs
from testbed.pytest_plugin.p2p import EXPORTER, IMPORTER
from testbed.qemu.machine import Machine


def test_guest_runs_commands_and_survives_an_unplug(vm: Machine) -> None:
    """Boot the default machine, run something in it, unplug the exporter, check the rest."""
    assert vm.ssh.run_check("uname -r").stdout.strip() == vm.kernel.release
    assert pci.find(vm.ssh, EXPORTER) and pci.find(vm.ssh, IMPORTER)

    result = hotplug.unplug(vm, "gpu-exporter")  # QMP device_del, waits for DEVICE_DELETED
    assert result.event is not None, "QEMU never reported the device gone"
    pci.wait_gone(vm.ssh, EXPORTER, Deadline(10, "the exporter leaves the guest"))
    assert pci.find(vm.ssh, IMPORTER), "the importer must stay"


def test_native_hotplug_machine_boots(machine_factory: Callable[..., Machine]) -> None:
    """Any machine by name (or a YAML file of your own), with extra kernel arguments."""
    vm = machine_factory("native-hotplug", kernel_args=["mytest.flag=1"])
    assert "mytest.flag=1" in vm.ssh.run_check("cat /proc/cmdline").stdout


def test_p2p_write_lands_and_balances(p2p_vm: Machine) -> None:
    """The P2P drivers on the shared guest: a DMA into the exporter's BAR, then counters."""
    run = ctl.p2pctl(
        p2p_vm.ssh, "create size=16K", "mmap", "reg", "dma-write len=64 pattern=0x5a", "dereg"
    ).expect_ok()
    assert run.op("reg")["npages"] == 4
    stats = debugfs.exporter_stats(p2p_vm.ssh)
    assert stats["maps"] == stats["unmaps"], stats


def test_unplug_with_p2p_drivers_loaded(fresh_p2p_vm: Callable[..., Machine]) -> None:
    """A guest of the test's own when the test removes a device."""
    vm = fresh_p2p_vm()
    hotplug.unplug(vm, "gpu-exporter")
    assert debugfs.exporter_devices(vm.ssh) == []
