"""The host's side of a P2P check: the exporter's BAR2 is a file the host can read and write."""

from __future__ import annotations

from testbed.qemu.machine import Machine

EXPORTER_ID = "gpu-exporter"


def read_bar(vm: Machine, offset: int, length: int, device_id: str = EXPORTER_ID) -> bytes:
    """``length`` bytes of ``device_id``'s BAR2 at ``offset``, from its backing file."""
    with vm.backing_file(device_id).open("rb") as f:
        f.seek(offset)
        return f.read(length)


def write_bar(vm: Machine, offset: int, data: bytes, device_id: str = EXPORTER_ID) -> None:
    """Write ``data`` into ``device_id``'s BAR2 at ``offset``, as the guest will see it."""
    with vm.backing_file(device_id).open("r+b") as f:
        f.seek(offset)
        f.write(data)


def hexint(value: str) -> int:
    """p2pctl prints addresses and offsets as ``0x`` strings."""
    return int(value, 16)
