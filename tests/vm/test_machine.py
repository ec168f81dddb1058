"""The end-to-end loop: real QEMU, real kernel, real SSH, QMP hotplug, assertions.

Each test boots its own guest (about 3 s under TCG) so a failure leaves one self-contained
artifact folder behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.deadline import Deadline, wait_for
from testbed.devices import hotplug
from testbed.errors import GuestError, GuestPanic, UnknownNameError, UnplugTimeout
from testbed.guest import pci
from testbed.guest.console import Problem
from testbed.kernel.image import Kernel, user_kernel
from testbed.qemu.machine import Machine

EXPORTER = "1af4:1110"
IMPORTER = "1234:11e8"
MACHINES = ["default", "native-hotplug"]

Factory = Callable[..., Machine]


def bar2_roundtrip(vm: Machine, offset: int = 8192, length: int = 4096) -> None:
    """The host writes random bytes into the exporter's backing file; the guest reads them
    back through BAR2 (sysfs resource2) and they must be the same bytes."""
    pattern = os.urandom(length)
    backing = vm.backing_file("gpu-exporter")
    with backing.open("r+b") as f:
        f.seek(offset)
        f.write(pattern)
    (dev,) = pci.find(vm.ssh, EXPORTER)
    got = vm.ssh.run_check(
        f"barcat read {dev.sysfs('resource2')} {offset} {length} | od -An -tx1 -v"
    )
    assert bytes.fromhex(got.stdout) == pattern


@pytest.mark.parametrize("machine", MACHINES)
def test_boot_lists_both_devices(machine_factory: Factory, machine: str) -> None:
    vm = machine_factory(machine)
    ids = {d.pci_id for d in pci.list_devices(vm.ssh)}
    assert {EXPORTER, IMPORTER} <= ids
    assert vm.ssh.run_check("uname -r").stdout.strip() == vm.kernel.release
    # the run's artifacts say what ran, and how
    record = json.loads((vm.run_dir / "kernel.json").read_text())
    assert record["release"] == vm.kernel.release
    assert (vm.run_dir / "accel.txt").read_text().startswith(("tcg", "kvm"))
    assert "ivshmem-plain" in (vm.run_dir / "qemu-cmdline.txt").read_text()


def test_guest_reads_host_pattern_through_bar2(vm: Machine) -> None:
    bar2_roundtrip(vm)


@pytest.mark.parametrize("machine", MACHINES)
def test_unplug_and_replug_exporter(machine_factory: Factory, machine: str) -> None:
    vm = machine_factory(machine)
    result = hotplug.unplug(vm, "gpu-exporter")
    assert result.event is not None
    assert result.event["data"]["device"] == "gpu-exporter"
    pci.wait_gone(vm.ssh, EXPORTER, Deadline(10, "exporter leaves the guest"))
    assert pci.find(vm.ssh, IMPORTER), "the importer must stay when the exporter leaves"
    assert sorted(p.name for p in vm.run_dir.glob("query-pci-*unplug-gpu-exporter.json")) == [
        "query-pci-01-before-unplug-gpu-exporter.json",
        "query-pci-02-after-unplug-gpu-exporter.json",
    ]

    hotplug.plug(vm, "gpu-exporter")
    pci.wait_listed(vm.ssh, EXPORTER, Deadline(20, "exporter comes back"))
    bar2_roundtrip(vm)


@pytest.mark.parametrize(
    ("machine", "kernel_arg"),
    [("default", "acpiphp.disable=1"), ("native-hotplug", "pcie_ports=compat")],
)
def test_guest_that_never_acks_unplug_fails_within_bound(
    machine_factory: Factory, machine: str, kernel_arg: str
) -> None:
    vm = machine_factory(machine, kernel_args=[kernel_arg])
    bound = 4.0
    start = time.monotonic()
    with pytest.raises(UnplugTimeout, match="never acknowledged the unplug of 'gpu-exporter'"):
        hotplug.unplug(vm, "gpu-exporter", timeout=bound)
    assert time.monotonic() - start < bound + 3
    assert pci.find(vm.ssh, EXPORTER), "the device must still be there"


def test_unknown_device_id_names_the_known_ones(vm: Machine) -> None:
    with pytest.raises(UnknownNameError, match="gpu-exporter") as info:
        hotplug.unplug(vm, "gpu-exporterr")
    assert "importer" in str(info.value)


@pytest.mark.console_allows(Problem.PANIC, Problem.OOPS, Problem.BUG)
def test_guest_panic_under_a_command_is_reported_at_once(vm: Machine) -> None:
    start = time.monotonic()
    with pytest.raises(GuestPanic, match="panicked") as info:
        vm.ssh.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert time.monotonic() - start < 15, "the panic must end the wait, not the timeout"
    assert "sysrq" in str(info.value).lower(), "the error carries the console excerpt"


@pytest.mark.console_allows(Problem.PANIC, Problem.OOPS, Problem.BUG)
def test_guest_panic_between_commands_is_reported(vm: Machine) -> None:
    vm.ssh.run_check("(sleep 0.2; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 &")
    with pytest.raises(GuestPanic, match="panicked"):
        wait_for(vm.check_alive, Deadline(30, "GUEST_PANICKED"), doing="waiting for the panic")


def test_native_unplug_right_after_plug_waits_out_the_busy_window(
    machine_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    vm = machine_factory("native-hotplug")
    hotplug.unplug(vm, "gpu-exporter")
    hotplug.plug(vm, "gpu-exporter")
    # the slot's power indicator blinks for ~5 s after a plug: QEMU refuses device_del
    with caplog.at_level("INFO", logger="testbed.devices.hotplug"):
        result = hotplug.unplug(vm, "gpu-exporter")
    assert result.busy_retries > 0, "device_del right after a plug should have met a busy slot"
    assert "guest is busy" in caplog.text
    pci.wait_gone(vm.ssh, EXPORTER, Deadline(10, "exporter leaves the guest"))


def test_user_kernel_boots_like_the_stock_one(
    machine_factory: Factory, testbed_kernel: Kernel
) -> None:
    """``--kernel/--modules``: a bzImage and modules folder given by path (here the stock
    kernel's own files) boot, and the run records that kernel."""
    mine = user_kernel(testbed_kernel.image, testbed_kernel.modules, testbed_kernel.build)
    assert mine.release == testbed_kernel.release
    vm = machine_factory("default", kernel=mine)
    assert vm.ssh.run_check("uname -r").stdout.strip() == mine.release
    record = json.loads((vm.run_dir / "kernel.json").read_text())
    assert record["origin"] == mine.origin


def test_a_guest_module_that_fails_to_load_fails_the_boot_clearly(
    machine_factory: Factory, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.ko"
    bogus.write_bytes(b"not an ELF module\n")
    with pytest.raises(GuestError, match="a guest module failed to load at boot") as info:
        machine_factory("default", guest_modules=[bogus])
    assert "bogus.ko" in str(info.value)


def test_switch_machine_puts_both_devices_under_one_upstream_port_and_unplugs_there(
    machine_factory: Factory,
) -> None:
    """``switch``: the guest sees root port -> x3130 upstream (104c:8232) -> one xio3130
    downstream port (104c:8233) per device; the exporter leaves and comes back through its
    downstream port's slot (ACPI hotplug, acpiphp)."""
    vm = machine_factory("switch")
    (exp,), (imp,) = pci.find(vm.ssh, EXPORTER), pci.find(vm.ssh, IMPORTER)
    paths = vm.ssh.run_check(
        f"readlink -f {exp.sysfs()}; readlink -f {imp.sysfs()}"  # busybox: one file per call
    ).stdout.split()
    chains = [p.split("/")[3:] for p in paths]  # pci0000:00, root port, upstream, downstream, dev
    assert [len(c) for c in chains] == [5, 5], paths
    assert chains[0][:3] == chains[1][:3], f"one root port and one upstream port: {paths}"
    assert chains[0][3] != chains[1][3], f"each device on its own downstream port: {paths}"
    ids = {d.address: d.pci_id for d in pci.list_devices(vm.ssh)}
    assert ids[chains[0][2]] == "104c:8232"
    assert ids[chains[0][3]] == ids[chains[1][3]] == "104c:8233"
    assert "acpiphp: Slot" in vm.console_text()

    result = hotplug.unplug(vm, "gpu-exporter")
    assert result.event is not None and result.seconds < 2, "ACPI hotplug answers at once"
    pci.wait_gone(vm.ssh, EXPORTER, Deadline(10, "exporter leaves the guest"))
    assert pci.find(vm.ssh, IMPORTER), "the importer must stay when the exporter leaves"
    hotplug.plug(vm, "gpu-exporter")
    pci.wait_listed(vm.ssh, EXPORTER, Deadline(20, "exporter comes back"))
    bar2_roundtrip(vm)
