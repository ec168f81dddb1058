"""A kernel ready to boot: image, modules, and (optionally) a build tree for guest modules."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.errors import KernelError


@dataclass(frozen=True)
class Kernel:
    """What the testbed needs of a kernel, wherever it came from."""

    release: str  #: ``uname -r`` in the guest, e.g. ``6.1.0-56-cloud-amd64``
    image: Path  #: the bzImage
    modules: Path | None  #: ``lib/modules/<release>``, with ``modules.dep``
    build: Path | None  #: a kbuild tree to build out-of-tree guest modules against
    origin: str  #: one line saying where it came from (package, version, hash; or path)

    def describe(self) -> str:
        return f"{self.release} ({self.origin})"

    def manifest(self) -> str:
        """A JSON record for a run's artifacts."""
        return json.dumps({k: str(v) for k, v in asdict(self).items()}, indent=2) + "\n"

    def config_path(self) -> Path | None:
        """The kernel's .config, where known."""
        if self.build is not None and (self.build / ".config").is_file():
            return self.build / ".config"
        return None


_VERSION_RE = re.compile(rb"^(\S+)")


def bzimage_release(image: Path) -> str:
    """Read the kernel release string out of a bzImage's setup header.

    The x86 boot protocol stores, at offset 0x20E, a pointer (minus 0x200) to a NUL-terminated
    string that begins with the release (``6.1.0-56-cloud-amd64 (debian-kernel@...) #1 ...``).
    """
    try:
        with image.open("rb") as f:
            header = f.read(0x400)
            if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
                raise KernelError(
                    f"{image}: not an x86 bzImage (no 'HdrS' boot-protocol signature); pass the "
                    "arch/x86/boot/bzImage from your build"
                )
            pointer = int.from_bytes(header[0x20E:0x210], "little")
            if pointer == 0:
                raise KernelError(
                    f"{image}: the bzImage header carries no kernel version string; pass "
                    "--kernel with an image built by kbuild"
                )
            offset = pointer + 0x200
            f.seek(offset)
            text = f.read(256).split(b"\0", 1)[0]
    except OSError as exc:
        raise KernelError(f"{image}: cannot read kernel image: {exc.strerror}") from exc
    match = _VERSION_RE.match(text)
    if not match:
        raise KernelError(f"{image}: the setup header has no kernel version string")
    return match.group(1).decode("ascii", "replace")


def user_kernel(image: Path, modules: Path | None = None, build: Path | None = None) -> Kernel:
    """A kernel the user built: a bzImage plus its ``lib/modules/<release>`` folder.

    ``modules`` may name either ``lib/modules/<release>`` itself or a folder holding it
    (what ``make modules_install INSTALL_MOD_PATH=DIR`` produces).
    """
    if not image.is_file():
        raise KernelError(
            f"{image}: kernel image not found; pass --kernel PATH/arch/x86/boot/bzImage, or drop "
            "--kernel to use the stock Debian kernel"
        )
    release = bzimage_release(image)
    mod_dir: Path | None = None
    if modules is not None:
        for candidate in (modules, modules / "lib" / "modules" / release, modules / release):
            if (candidate / "modules.dep").is_file():
                mod_dir = candidate
                break
        else:
            raise KernelError(
                f"{modules}: no modules.dep for kernel {release} here; run 'make modules_install "
                f"INSTALL_MOD_PATH={modules}' (or depmod) and pass that folder"
            )
        if mod_dir.name != release:
            raise KernelError(
                f"{mod_dir}: these modules are for {mod_dir.name!r}, but {image} is {release!r}"
            )
        if build is None and (mod_dir / "build" / "Makefile").is_file():
            build = (mod_dir / "build").resolve()
    return Kernel(
        release=release,
        image=image.resolve(),
        modules=mod_dir.resolve() if mod_dir else None,
        build=build,
        origin=f"user-supplied {image.resolve()}",
    )
