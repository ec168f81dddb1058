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
"""

from __future__ import annotations

import logging
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from testbed.deadline import Deadline, wait_for
from testbed.errors import TestbedError
from testbed.guest.keys import KeyPair
from testbed.qemu import cmdline
from testbed.qemu.accel import AccelChoice
from testbed.qemu.machine import Machine

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
    )
