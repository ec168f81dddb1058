"""Snapshot reuse (testbed.qemu.snapshot, Machine(restore=...)): real QEMU, real SSH, real QMP.

One guest with the P2P drivers is booted and saved per module; each test resumes it in a fresh
QEMU of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.deadline import Deadline
from testbed.devices import hotplug
from testbed.devices.registry import load_machine
from testbed.guest import pci
from testbed.kernel.image import Kernel
from testbed.p2p import ctl
from testbed.p2p.payload import Payload, payload
from testbed.pytest_plugin.settings import Settings
from testbed.qemu import snapshot
from testbed.qemu.machine import Machine
from testbed.qemu.process import reaped_tempdir

EXPORTER = "1af4:1110"
IMPORTER = "1234:11e8"


@pytest.fixture(scope="module")
def drivers(testbed_kernel: Kernel) -> Payload:
    return payload(testbed_kernel)


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory,
    testbed_settings: Settings,
    testbed_kernel: Kernel,
    drivers: Payload,
) -> Iterator[snapshot.Saved]:
    run_dir = tmp_path_factory.mktemp("snapshot-boot")
    with (
        reaped_tempdir("p2p-testbed-snapshot-") as state,
        Machine(
            load_machine("default"),
            testbed_kernel,
            run_dir,
            accel=testbed_settings.accel,
            qemu_args=snapshot.SNAPSHOT_QEMU_ARGS,
            **drivers.machine_kwargs(),
        ) as vm,
    ):
        vm.ssh.run_check("echo before-save > /root/marker")
        yield snapshot.save(vm, state, Deadline(120, "saving the guest"))


def _resume(saved: snapshot.Saved, run_dir: Path, drivers: Payload, kernel: Kernel) -> Machine:
    return Machine(
        load_machine("default"),
        kernel,
        run_dir,
        restore=saved,
        qemu_args=snapshot.SNAPSHOT_QEMU_ARGS,
        **drivers.machine_kwargs(),
    )


def test_save_needs_the_migratable_ivshmem(
    tmp_path: Path, testbed_kernel: Kernel, testbed_settings: Settings
) -> None:
    with (
        Machine(
            load_machine("default"), testbed_kernel, tmp_path / "vm", accel=testbed_settings.accel
        ) as vm,
        pytest.raises(snapshot.SnapshotError, match="master=on"),
    ):
        snapshot.save(vm, tmp_path, Deadline(30, "saving"))


def test_resumed_guest_is_the_saved_one_in_folders_of_its_own(
    tmp_path: Path, saved: snapshot.Saved, drivers: Payload, testbed_kernel: Kernel
) -> None:
    with _resume(saved, tmp_path / "one", drivers, testbed_kernel) as one:
        assert one.ssh.run_check("cat /root/marker").stdout == "before-save\n"
        assert one.ssh.run_check("lsmod").stdout.count("p2p_") >= 2
        guest_now = float(one.ssh.run_check("date +%s").stdout)
        assert abs(guest_now - time.time()) < 5, "the guest clock was not brought to the host's"
        assert one.timings["boot_to_ssh_s"] < 30
        # a second resume at the same time: its own QEMU, port, BAR file and console
        with _resume(saved, tmp_path / "two", drivers, testbed_kernel) as two:
            assert two.ssh_port != one.ssh_port
            two.ssh.run_check("echo two > /root/marker")
            assert one.ssh.run_check("cat /root/marker").stdout == "before-save\n"
            assert one.backing_file("gpu-exporter") != two.backing_file("gpu-exporter")
        result = hotplug.unplug(one, "gpu-exporter")
        assert result.event is not None
        pci.wait_gone(one.ssh, EXPORTER, Deadline(10, "the exporter leaves the resumed guest"))
    for folder in (tmp_path / "one", tmp_path / "two"):
        assert (folder / "console-before-save.log").read_text().count("p2p") > 0
        assert (folder / "console.log").is_file()
        assert "-incoming" in (folder / "qemu-cmdline.txt").read_text()
        assert not (folder / "gpu-exporter.bar").exists(), "BAR copy left behind"


def test_dma_into_a_resumed_guests_bar_reaches_its_backing_file(
    tmp_path: Path, saved: snapshot.Saved, drivers: Payload, testbed_kernel: Kernel
) -> None:
    """QEMU 7.2's edu migrates no state, not even its config space: without the write-back
    (snapshot.replay_lost_config) its BAR0 is unassigned and bus mastering off after the
    restore, and this DMA never happens (it was a strict xfail until the cause was found)."""
    with _resume(saved, tmp_path / "vm", drivers, testbed_kernel) as vm:
        importer = pci.find(vm.ssh, IMPORTER)[0].address
        assert vm.replayed_config == [importer], "only edu should have lost its config space"
        saved_config = dict(saved.pci_config)[importer]
        now = snapshot.parse_config_dump(vm.ssh.run_check(snapshot.CONFIG_DUMP).stdout)
        assert now[importer][0x10:0x14] == saved_config[0x10:0x14]  # BAR0 where the guest put it
        assert now[importer][4] & 0x06 == 0x06  # memory decoding and bus mastering on
        run = ctl.p2pctl(
            vm.ssh, "create size=16K", "mmap", "reg", "dma-write len=4096 pattern=0x5a", "dereg"
        ).expect_ok()
        offset = int(run.op("create")["offset"], 16)
        with vm.backing_file("gpu-exporter").open("rb") as bar:
            bar.seek(offset)
            assert bar.read(4096) == b"\x5a" * 4096
