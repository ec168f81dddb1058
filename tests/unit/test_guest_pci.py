"""What the guest sees on its PCI bus (testbed.guest.pci).

The module reads sysfs through one shell command sent over a :class:`GuestShell`. Here a fake
shell runs that same command with ``sh`` on this host, against a sysfs-like tree built in
``tmp_path`` (the command's ``/sys/bus/pci/devices`` is pointed at the tree).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from testbed.errors import GuestCommandError
from testbed.guest.pci import PciDevice, find, list_devices, parse_listing
from testbed.guest.ssh import CommandResult, GuestShell

SYSFS_DEVICES = "/sys/bus/pci/devices"


class LocalShell(GuestShell):
    """A GuestShell that runs commands in ``sh`` here, with sysfs moved to ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[str] = []

    def run(
        self, command: str, *, timeout: float = 10, stdin: bytes | None = None
    ) -> CommandResult:
        self.commands.append(command)
        assert SYSFS_DEVICES in command, "the listing no longer reads /sys/bus/pci/devices"
        start = time.monotonic()
        proc = subprocess.run(
            ["sh", "-c", command.replace(SYSFS_DEVICES, str(self.root / "bus/pci/devices"))],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return CommandResult(
            command,
            proc.returncode,
            proc.stdout.decode(),
            proc.stderr.decode(),
            time.monotonic() - start,
        )


def add_device(
    sysfs: Path, address: str, vendor: str, device: str, driver: str | None = None
) -> None:
    """Lay out a device the way Linux does: a real folder under devices/, a symlink in bus/."""
    bus, _, _ = address.rpartition(":")
    real = sysfs / "devices" / f"pci{bus}" / address
    real.mkdir(parents=True)
    (real / "vendor").write_text(f"0x{vendor}\n")
    (real / "device").write_text(f"0x{device}\n")
    if driver is not None:
        drv = sysfs / "bus" / "pci" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(drv, real), real / "driver")
    link_dir = sysfs / "bus" / "pci" / "devices"
    link_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(real, link_dir), link_dir / address)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    add_device(root, "0000:00:00.0", "8086", "29c0")
    add_device(root, "0000:00:01.0", "1af4", "1000", "virtio-pci")
    add_device(root, "0000:00:02.0", "1b36", "000c", "pcieport")
    add_device(root, "0000:01:00.0", "1af4", "1110", "p2p_exporter")
    add_device(root, "0000:00:03.0", "1b36", "000c", "pcieport")
    add_device(root, "0000:02:00.0", "1234", "11e8")
    return root


def test_list_devices_from_sysfs_tree(sysfs: Path) -> None:
    shell = LocalShell(sysfs)
    devices = list_devices(shell)
    assert len(shell.commands) == 1
    assert devices == [
        PciDevice("0000:00:00.0", "8086", "29c0", None),
        PciDevice("0000:00:01.0", "1af4", "1000", "virtio-pci"),
        PciDevice("0000:00:02.0", "1b36", "000c", "pcieport"),
        PciDevice("0000:00:03.0", "1b36", "000c", "pcieport"),
        PciDevice("0000:01:00.0", "1af4", "1110", "p2p_exporter"),
        PciDevice("0000:02:00.0", "1234", "11e8", None),
    ]


def test_find_by_pci_id(sysfs: Path) -> None:
    shell = LocalShell(sysfs)
    assert find(shell, "1af4:1110") == [PciDevice("0000:01:00.0", "1af4", "1110", "p2p_exporter")]
    assert [d.address for d in find(shell, "1b36:000c")] == ["0000:00:02.0", "0000:00:03.0"]
    assert find(shell, "dead:beef") == []


def test_unbound_device_has_no_driver(sysfs: Path) -> None:
    (edu,) = find(LocalShell(sysfs), "1234:11e8")
    assert edu.driver is None


def test_empty_bus(tmp_path: Path) -> None:
    (tmp_path / "sys" / "bus" / "pci" / "devices").mkdir(parents=True)
    assert list_devices(LocalShell(tmp_path / "sys")) == []


def test_listing_command_failure_is_raised(tmp_path: Path) -> None:
    class Failing(LocalShell):
        def run(
            self, command: str, *, timeout: float = 10, stdin: bytes | None = None
        ) -> CommandResult:
            return CommandResult(command, 1, "", "sh: boom", 0.0)

    with pytest.raises(GuestCommandError, match="exit code 1"):
        list_devices(Failing(tmp_path))


def test_parse_listing_skips_malformed_lines() -> None:
    text = (
        "0000:00:01.0 0x1af4 0x1000 virtio-pci\n"
        "\n"
        "cat: /sys/bus/pci/devices/x/vendor: No such file or directory\n"
        "0000:00:04.0 0x1af4\n"
        "0000:01:00.0 1af4 1110 -\n"
    )
    assert parse_listing(text) == [
        PciDevice("0000:00:01.0", "1af4", "1000", "virtio-pci"),
        PciDevice("0000:01:00.0", "1af4", "1110", None),
    ]


def test_pci_device_helpers() -> None:
    dev = PciDevice("0000:01:00.0", "1af4", "1110", None)
    assert dev.pci_id == "1af4:1110"
    assert dev.sysfs() == "/sys/bus/pci/devices/0000:01:00.0"
    assert dev.sysfs("resource2") == "/sys/bus/pci/devices/0000:01:00.0/resource2"
