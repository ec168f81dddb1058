"""Pure parts of ``testbed bench``: the bare floor's guest image and the paired ratio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.cli import bench
from testbed.guest.initramfs import BUSYBOX


@pytest.mark.skipif(not BUSYBOX.is_file(), reason=f"{BUSYBOX} not installed (busybox-static)")
def test_the_floor_boots_busybox_into_an_init_that_powers_off(tmp_path: Path) -> None:
    image = bench.poweroff_initramfs(tmp_path / "floor.cpio")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=image.read_bytes(),
        cwd=root,
        check=True,
        timeout=30,
    )
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "bin", "bin/busybox", "init",
    ]  # fmt: skip
    init = (root / "init").read_text()
    assert init.startswith("#!/bin/busybox sh\n")
    assert "poweroff -f" in init
    assert (root / "init").stat().st_mode & 0o111
    assert (root / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()


def test_paired_ratio_is_the_median_of_per_run_ratios() -> None:
    # per run: 2.0, 1.5, 1.2 -> median 1.5 (the ratio of the medians, 3.0 / 2.0, is 1.5 too)
    assert bench._paired_ratio([1.0, 2.0, 10.0], [2.0, 3.0, 12.0]) == 1.5
    # one slow bare boot paired with a fast exec does not drag the median
    assert bench._paired_ratio([1.0, 1.0, 1.0, 9.0], [1.2, 1.3, 1.4, 1.0]) == 1.25
    assert bench._paired_ratio([2.0], [2.5]) == 1.25


def test_exec_phases_split_the_whole_process_and_add_up() -> None:
    spawn = 100.0
    stamps = {
        "main": 100.2,
        "vm_start": 100.3,
        "vm_qemu_spawn": 100.5,
        "vm_qmp_ready": 100.6,
        "vm_init_seen": 102.7,
        "vm_command_started": 103.0,
        "vm_command_exited": 103.1,
        "vm_down": 103.2,
        "main_end": 103.25,
        "guest_init reached": 1.2,  # the guest's clock: not a phase boundary
    }
    phases = bench.exec_phases(stamps, spawn, took=3.4)
    assert phases == {
        "start_imports_s": 0.2,
        "before_qemu_s": 0.3,
        "qemu_to_init_s": 2.2,
        "init_to_command_s": 0.3,
        "command_s": 0.1,
        "shutdown_s": 0.1,
        "process_exit_s": 0.2,
    }
    assert abs(sum(phases.values()) - 3.4) < 1e-6


def test_exec_phases_over_ssh_leave_out_what_was_not_stamped() -> None:
    stamps = {
        "main": 0.1,
        "vm_qemu_spawn": 0.3,
        "vm_sshd_seen": 2.3,
        "vm_ssh_connected": 2.6,
        "vm_down": 3.0,
    }
    phases = bench.exec_phases(stamps, 0.0, took=3.1)
    assert list(phases) == [
        "start_imports_s", "before_qemu_s", "init_to_sshd_s", "ssh_connect_s", "shutdown_s",
        "process_exit_s",
    ]  # fmt: skip
    assert phases["init_to_sshd_s"] == 2.0  # from QEMU's start: no "init" stamp over SSH
    assert abs(sum(phases.values()) - 3.1) < 1e-6
