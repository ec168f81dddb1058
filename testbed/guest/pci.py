"""What the guest sees on its PCI bus, read from sysfs in one command."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.guest.ssh import GuestShell

_LIST = (
    "for d in /sys/bus/pci/devices/*; do "
    'drv=-; [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")"); '
    'echo "${d##*/} $(cat "$d/vendor") $(cat "$d/device") $drv"; done'
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
