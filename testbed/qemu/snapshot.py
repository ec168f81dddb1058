"""Saved guest state: boot a machine once, save it, start later guests by restoring it.

Measured recipe (QEMU 7.2, see the facts file's "Snapshot and restore"): ``ivshmem-plain``
migrates only as ``master=on`` (the machine is started with ``-global
ivshmem-plain.master=on``, :data:`SNAPSHOT_QEMU_ARGS`); after ``stop``, ``migrate`` to
``exec:cat > FILE`` writes the state; a fresh QEMU with the same command line -- its own QMP
socket, console log and a copy of each BAR backing file -- plus ``-incoming "exec:cat FILE"``
loads it and waits ``paused``; ``cont`` resumes the guest, whose sshd then answers on the new
host port QEMU forwarded (read from ``info usernet``) with the keys it had when saved.

A :class:`~testbed.qemu.machine.Machine` given ``restore=saved`` starts this way (see
``Machine._resume``): everything else about it -- artifacts, hotplug, shutdown, the reaper --
is as for a booted one. Its ``console.log`` starts empty (what the guest printed up to the save
is copied next to it as ``console-before-save.log``), and its clock is set to the host's right
after the resume (it would otherwise go on from the saved moment). ``testbed bench
--snapshot`` measures restore-to-SSH against boot-to-SSH.

Devices QEMU does not migrate. QEMU 7.2's ``edu`` (our importer) registers no migration state
at all (``edu_class_init`` in hw/misc/edu.c sets no ``dc->vmsd``), so not even its PCI config
space travels: in the restored QEMU it is at reset -- command register 0 (no memory decoding,
no bus mastering), BAR0 unassigned (``query-pci`` shows address -1), MSI off -- while the
guest's driver still writes its DMA registers at the old BAR0 address. Its DMA then never
happens: the BAR's backing file keeps its old contents. So :func:`save` also records every PCI
function's config space (the first 256 bytes, read by the guest from QEMU), and
``Machine._resume`` calls :func:`replay_lost_config`, which writes it back, through the guest's
sysfs ``config`` files, for each function whose memory/IO/bus-master bits or BARs came back
different -- BARs, interrupt line and capabilities first, the command register last -- and
checks that they stuck. The device's internal registers are at reset too, which is what an
idle edu has anyway (the snapshot is taken between tests).
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.deadline import Deadline, wait_for
from testbed.errors import TestbedError
from testbed.guest.keys import KeyPair
from testbed.qemu import cmdline
from testbed.qemu.accel import AccelChoice
from testbed.qemu.machine import Machine

if TYPE_CHECKING:
    from testbed.guest.ssh import GuestShell

log = logging.getLogger(__name__)

#: what a machine must be started with for its state to be saved (ivshmem refuses otherwise)
SNAPSHOT_QEMU_ARGS = ("-global", "ivshmem-plain.master=on")


class SnapshotError(TestbedError):
    """Saving or restoring a guest's state failed (QEMU's own words included)."""


@dataclass(frozen=True)
class Saved:
    """A saved guest: everything a fresh QEMU needs to resume it, in ``folder``."""

    folder: Path
    argv: tuple[str, ...]  #: the saved machine's command line
    old_dirs: tuple[Path, Path]  #: its run folder and private folder (rewritten on restore)
    bars: tuple[tuple[str, str], ...]  #: (file name in the run folder, copy in ``folder``)
    client_key: KeyPair  #: what the saved guest trusts (its private file copied into ``folder``)
    host_key: KeyPair  #: what the saved guest serves
    accel: AccelChoice
    #: each PCI function's config space (address, first 256 bytes) when saved
    pci_config: tuple[tuple[str, bytes], ...] = ()

    @property
    def state(self) -> Path:
        return self.folder / "state.bin"


def save(vm: Machine, folder: Path, deadline: Deadline) -> Saved:
    """Stop ``vm`` and save its state and BAR contents into ``folder`` (which must exist;
    the caller registers it with the reaper). ``vm`` stays stopped; shut it down after."""
    if vm.private_dir is None or vm.client_key is None or vm.host_key is None:
        raise SnapshotError("save: the machine was never started")
    if not all(a in vm.argv for a in SNAPSHOT_QEMU_ARGS[1:]):
        raise SnapshotError(
            "save: start the machine with qemu_args=SNAPSHOT_QEMU_ARGS (ivshmem-plain migrates "
            "only as master=on)"
        )
    state = folder / "state.bin"
    pci_config = parse_config_dump(vm.ssh.run_check(CONFIG_DUMP).stdout)
    if vm.collect_dmesg:  # now: a stopped guest answers no SSH command at shutdown
        (vm.run_dir / "dmesg.txt").write_text(vm.ssh.run_check("dmesg").stdout)
        vm.collect_dmesg = False
    vm.qmp.execute("stop")
    vm.qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"})

    def finished() -> dict[str, object] | None:
        info: dict[str, object] = vm.qmp.execute("query-migrate")
        return info if info.get("status") in ("completed", "failed", "cancelled") else None

    info = wait_for(finished, deadline, doing="QEMU to write the guest's state")
    if info.get("status") != "completed":
        raise SnapshotError(f"save: migration {info.get('status')}: {info.get('error-desc')}")
    bars = []
    for dev in vm.spec.devices:
        if cmdline.backing_size(vm.definition, dev) is not None:
            source = vm.backing_file(dev.id)
            copy = folder / f"bar-{dev.id}"
            shutil.copyfile(source, copy)
            bars.append((source.name, copy.name))
    shutil.copyfile(vm.private_dir / "initrd.cpio", folder / "initrd.cpio")
    client = folder / "client_key"
    shutil.copyfile(vm.client_key.private, client)
    client.chmod(0o600)
    shutil.copyfile(vm.console_log, folder / "console.log")
    assert vm.accel is not None
    return Saved(
        folder=folder,
        argv=tuple(vm.argv),
        old_dirs=(vm.run_dir, vm.private_dir),
        bars=tuple(bars),
        client_key=KeyPair(client, vm.client_key.public),
        host_key=vm.host_key,
        accel=vm.accel,
        pci_config=tuple(sorted(pci_config.items())),
    )


def config_dump(addresses: str = "*") -> str:
    """Shell printing, per PCI function, its address and then its first 256 config bytes as
    QEMU has them, in hex (od's lines): one ``od`` per function and nothing else, as every
    process costs the guest milliseconds under TCG."""
    return (
        f"for d in /sys/bus/pci/devices/{addresses}; do "
        'printf "%s\\n" "${d##*/}"; od -An -tx1 -v -N256 "$d/config"; done'
    )


CONFIG_DUMP = config_dump()
_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_BYTE = re.compile(r"[0-9a-f]{2}")
_COMMAND = 0x04  #: the command register (2 bytes)
_DECODE_BITS = 0x0007  #: I/O space, memory space, bus master
_BARS = slice(0x10, 0x28)


def parse_config_dump(text: str) -> dict[str, bytes]:
    """:func:`config_dump`'s output as {address: config bytes}: an address, then its bytes
    in hex; anything else raises, as does a function with fewer than 64 or more than 256."""
    found: dict[str, bytearray] = {}
    current: bytearray | None = None
    for token in text.split():
        if _ADDRESS.fullmatch(token):
            current = found[token] = bytearray()
        elif _BYTE.fullmatch(token) and current is not None:
            current.append(int(token, 16))
        else:
            raise SnapshotError(f"cannot parse the guest's config dump at {token!r}")
    for address, data in found.items():
        if not 0x40 <= len(data) <= 256:
            raise SnapshotError(f"config dump of {address}: {len(data)} bytes (64..256 expected)")
    return {address: bytes(data) for address, data in found.items()}


def _command(config: bytes) -> int:
    return int.from_bytes(config[_COMMAND : _COMMAND + 2], "little")


def lost_config(saved: Mapping[str, bytes], now: Mapping[str, bytes]) -> list[str]:
    """Functions whose decoding/bus-master bits or BARs differ from when the guest was saved
    (a device whose state QEMU did not migrate comes back at reset)."""
    return sorted(
        address
        for address, before in saved.items()
        if address in now
        and (
            _command(before) & _DECODE_BITS != _command(now[address]) & _DECODE_BITS
            or before[_BARS] != now[address][_BARS]
        )
    )


def _octal(data: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in data)


def replay_command(
    address: str, config: bytes, *, devices: str = "/sys/bus/pci/devices", tmp: str = "/tmp"
) -> str:
    """Shell (busybox) that writes ``config`` back into the function's config space: bytes
    0x10 and up in ascending order (BARs, interrupt line, capabilities; read-only bits are
    masked by QEMU), then the command register, so decoding comes on with the BARs in place."""
    path = shlex.quote(f"{devices}/{address}/config")
    tmp = shlex.quote(f"{tmp}/.testbed-config-{address}")
    blocks = len(config) // 16 - 1
    return (
        f"printf '{_octal(config)}' > {tmp} && "
        f"dd if={tmp} of={path} bs=16 skip=1 seek=1 count={blocks} conv=notrunc 2>/dev/null && "
        f"dd if={tmp} of={path} bs=2 skip=2 seek=2 count=1 conv=notrunc 2>/dev/null && "
        f"rm -f {tmp}"
    )


def replay_lost_config(shell: GuestShell, saved: Saved) -> list[str]:
    """After a resume: set the guest's clock to the host's, and write back the config space
    of every PCI function that came back different from when it was saved (see the module
    docstring); returns their addresses. Raises if one still differs afterwards."""
    before = dict(saved.pci_config)
    now = parse_config_dump(
        shell.run_check(f"date -u -s @{time.time():.0f} >/dev/null; {CONFIG_DUMP}").stdout
    )
    lost = lost_config(before, now)
    if not lost:
        return lost
    replay = " && ".join(replay_command(a, before[a]) for a in lost)
    check = " ".join(f"{{ {config_dump(a)}; }}" for a in lost)
    again = parse_config_dump(shell.run_check(f"{replay} && {check}").stdout)
    still = lost_config({a: before[a] for a in lost}, again)
    if still:
        raise SnapshotError(
            f"restore: the config space of {', '.join(still)} differs from the saved guest's "
            "even after writing it back (command register or BARs)"
        )
    log.debug("restore: wrote back the config space of %s", ", ".join(lost))
    return lost
