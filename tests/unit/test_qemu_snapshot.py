"""Pure parts of testbed.qemu.snapshot: the config-space dump, what a restore lost, the
write-back command (run here by the host's busybox against a plain file)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.qemu import snapshot
from testbed.qemu.snapshot import SnapshotError, lost_config, parse_config_dump, replay_command

EDU = "0000:02:00.0"
#: edu's config space as the guest had it (command 0x0507, BAR0 0xfe600000, MSI at 0x40) ...
SAVED = bytes.fromhex(
    "3412e811 07051000 1000ff00 00000000 000060fe 00000000 00000000 00000000"
    "00000000 00000000 00000000 f41a0011 00000000 40000000 00000000 0a010000"
    "05000100 0c10e0fe 00000000 21410000" + "00000000" * 44
)
#: ... and as QEMU 7.2 brings it back from a migration stream that has no edu state in it
RESET = bytes.fromhex(
    "3412e811 00001000 1000ff00 00000000 00000000 00000000 00000000 00000000"
    "00000000 00000000 00000000 f41a0011 00000000 40000000 00000000 00010000"
    "05000000 00000000 00000000 00000000" + "00000000" * 44
)
EXPORTER = "0000:01:00.0"
IVSHMEM = bytes.fromhex("f41a1011 03010000 01000005" + "00" * 52)


def dump_lines(address: str, config: bytes) -> str:
    """What ``config_dump`` prints for one function: the address, then od's lines."""
    rows = [" ".join(f"{b:02x}" for b in config[i : i + 16]) for i in range(0, len(config), 16)]
    return "\n".join([address, *rows]) + "\n"


def test_the_dump_parses_into_bytes_per_address() -> None:
    text = dump_lines(EDU, SAVED) + dump_lines(EXPORTER, IVSHMEM)
    assert parse_config_dump(text) == {EDU: SAVED, EXPORTER: IVSHMEM}


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_the_dump_command_run_by_busybox_parses_back(tmp_path: Path) -> None:
    for address, config in ((EDU, SAVED), (EXPORTER, IVSHMEM + bytes(192))):
        (tmp_path / address).mkdir()
        (tmp_path / address / "config").write_bytes(config + b"\xff" * 3840)  # PCIe: 4 KiB
    command = snapshot.config_dump().replace("/sys/bus/pci/devices", str(tmp_path))
    out = subprocess.run(
        ["busybox", "sh", "-c", command], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert parse_config_dump(out) == {EDU: SAVED, EXPORTER: IVSHMEM + bytes(192)}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"{EDU} 34 12 zz", "cannot parse the guest's config dump at 'zz'"),
        ("34 12", "at '34'"),
        (f"{EDU} 34 12", "2 bytes"),
        (EDU, "0 bytes"),
    ],
)
def test_a_dump_line_that_does_not_parse_is_an_error(line: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        parse_config_dump(line)


def test_a_function_at_reset_has_lost_its_config_and_an_unchanged_one_has_not() -> None:
    saved = {EDU: SAVED, EXPORTER: IVSHMEM}
    assert lost_config(saved, {EDU: RESET, EXPORTER: IVSHMEM}) == [EDU]
    assert lost_config(saved, saved) == []
    # status bits (offset 6) and the interrupt line may differ: not a lost decoder state
    moved = bytearray(SAVED)
    moved[6] ^= 0xFF
    moved[0x3C] = 0x0B
    assert lost_config(saved, {EDU: bytes(moved)}) == []
    bar_moved = bytearray(SAVED)
    bar_moved[0x13] = 0xFD
    assert lost_config(saved, {EDU: bytes(bar_moved)}) == [EDU]
    assert lost_config(saved, {}) == [], "a function the guest no longer lists is not replayed"


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_the_replay_writes_0x10_and_up_then_the_command_register(tmp_path: Path) -> None:
    """busybox printf + dd, as in the guest, against a file standing in for sysfs ``config``:
    every byte from 0x10 up and the command register are the saved ones, bytes 0-3 and 6-15
    (ids, status, class: read-only or RW1C in a real function) are not written."""
    device = tmp_path / "devices" / EDU
    device.mkdir(parents=True)
    config = device / "config"
    config.write_bytes(b"\xee" * 256)
    command = replay_command(EDU, SAVED, devices=str(tmp_path / "devices"), tmp=str(tmp_path))
    subprocess.run(["busybox", "sh", "-c", command], check=True, timeout=30)
    written = config.read_bytes()
    assert len(written) == 256
    assert written[0x10:] == SAVED[0x10:]
    assert written[4:6] == SAVED[4:6]
    assert written[:4] == b"\xee" * 4 and written[6:0x10] == b"\xee" * 10
    assert not list(tmp_path.glob(".testbed-config-*")), "the staging file is removed"
