"""What the guest sees on its PCI bus, read from sysfs in one command."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.deadline import Deadline, wait_for
from testbed.guest.ssh import GuestShell

#: One line per device: address, vendor, device, driver (or -). Shell builtins only (read, cd
#: -P, echo): under TCG each fork costs milliseconds, and a q35 guest lists ~15 devices on
#: every boot (the driver-binding check) and on every hotplug poll.
_LIST = (
    "for d in /sys/bus/pci/devices/*; do "
    'read -r v < "$d/vendor"; read -r p < "$d/device"; drv=-; '
    'if cd -P "$d/driver" 2>/dev/null; then drv=${PWD##*/}; fi; '
    'echo "${d##*/} $v $p $drv"; done'
)


@dataclass(frozen=True)
class PciDevice:
    address: str  #: e.g. ``0000:01:00.0``
    vendor: str  #: four lower-case hex digits
    device: str
    driver: str | None

    @property
    def pci_id(self) -> str:
        return f"{self.vendor}:{self.device}"

    def sysfs(self, leaf: str = "") -> str:
        return f"/sys/bus/pci/devices/{self.address}" + (f"/{leaf}" if leaf else "")


def parse_listing(text: str) -> list[PciDevice]:
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        address, vendor, device, driver = parts
        devices.append(
            PciDevice(
                address,
                vendor.removeprefix("0x"),
                device.removeprefix("0x"),
                None if driver == "-" else driver,
            )
        )
    return devices


def list_devices(shell: GuestShell) -> list[PciDevice]:
    return parse_listing(shell.run_check(_LIST).stdout)


def find(shell: GuestShell, pci_id: str) -> list[PciDevice]:
    """Every device with ``vendor:device`` == ``pci_id``."""
    return [d for d in list_devices(shell) if d.pci_id == pci_id]


def wait_listed(shell: GuestShell, pci_id: str, deadline: Deadline) -> list[PciDevice]:
    """Wait until the guest lists ``pci_id``; return those devices."""
    return wait_for(
        lambda: find(shell, pci_id) or None,
        deadline,
        doing=f"waiting for {pci_id} to appear in the guest",
        interval=0.05,
        max_interval=0.25,
    )


def wait_gone(shell: GuestShell, pci_id: str, deadline: Deadline) -> None:
    """Wait until the guest no longer lists ``pci_id``."""
    wait_for(
        lambda: not find(shell, pci_id),
        deadline,
        doing=f"waiting for {pci_id} to leave the guest's PCI bus",
        interval=0.05,
        max_interval=0.25,
    )
