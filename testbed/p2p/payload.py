"""What a machine needs to run the P2P drivers: the two modules (loaded at boot, exporter first)
and ``p2pctl`` in ``/usr/local/bin``; and which path the loaded drivers were built for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import GuestError
from testbed.guest.initramfs import GuestFile
from testbed.guest.modules import P2PBuild, build_p2p_modules
from testbed.kernel.image import Kernel

if TYPE_CHECKING:  # paramiko is not imported for `testbed exec`, which needs no SSH
    from testbed.guest.ssh import GuestShell

P2PCTL = "/usr/local/bin/p2pctl"
#: How importers reach p2p_map (qemu-devices/p2p/include/p2p_compat.h): the kernel's
#: ``vm_operations_struct`` members (a kernel with the RFC series) or the exporter's compat API.
PATHS = ("vm_ops", "compat")


@dataclass(frozen=True)
class Payload:
    build: P2PBuild

    def machine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`testbed.qemu.machine.Machine`."""
        return {
            "guest_modules": list(self.build.modules),
            "guest_files": [GuestFile(P2PCTL, self.build.p2pctl, 0o755)],
        }


def payload(kernel: Kernel, src: Path | None = None) -> Payload:
    """Build (or take from the cache) the drivers for ``kernel``, from ``src`` if given
    (a patched copy of ``qemu-devices/p2p/``), else from the checkout."""
    return Payload(build_p2p_modules(kernel, src=src))


def driver_path(shell: GuestShell) -> str:
    """The path the loaded drivers use (``vm_ops`` or ``compat``), from their read-only
    ``path`` parameter; both modules were built by one probe, so they must agree."""
    words = shell.run_check(
        "cat /sys/module/p2p_exporter/parameters/path /sys/module/p2p_importer/parameters/path"
    ).stdout.split()
    if len(words) != 2 or words[0] != words[1] or words[0] not in PATHS:
        raise GuestError(
            f"the P2P drivers report paths {words}, expected one of {PATHS} from both; "
            "rebuild them (qemu-devices/p2p/Makefile, the compile probe)"
        )
    return words[0]
