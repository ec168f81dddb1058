"""What a machine needs to run the P2P drivers: the two modules (loaded at boot, exporter first)
and ``p2pctl`` in ``/usr/local/bin``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.guest.initramfs import GuestFile
from testbed.guest.modules import P2PBuild, build_p2p_modules
from testbed.kernel.image import Kernel

P2PCTL = "/usr/local/bin/p2pctl"


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
