"""Small C programs the testbed ships into the guest, built on the host and cached.

Each ``*.c`` here (and any extra source a caller names) is compiled with ``gcc -O2 -Wall
-Werror`` into ``~/.cache/p2p-testbed/tools/<hash>/<name>``, the hash covering the source,
the flags and the compiler's version, so an edit rebuilds and an unchanged tool never does.
They are linked dynamically against the host's C library, which the guest image carries
anyway (for dropbear; :mod:`testbed.guest.initramfs` adds the libraries a tool needs): a
static glibc binary would add ~0.8 MB per tool to the image the guest unpacks at every boot.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from testbed import paths
from testbed.errors import DependencyError, ImageError
from testbed.guest.initramfs import GuestFile

HERE = Path(__file__).parent


@functools.lru_cache(maxsize=8)
def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run(
            [cc, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.splitlines()[0]
    except FileNotFoundError as exc:
        raise DependencyError(f"{cc} not found; install it with 'apt-get install gcc'") from exc


def build_tool(source: Path, *, include_dirs: tuple[Path, ...] = (), cc: str = "gcc") -> Path:
    """Compile ``source`` (cached by content) and return the binary's path."""
    flags = ["-O2", "-Wall", "-Wextra", "-Werror"]
    h = hashlib.sha256(source.read_bytes())
    h.update(_compiler_id(cc).encode())
    h.update(" ".join(flags).encode())
    for inc in include_dirs:
        for header in sorted(inc.glob("*.h")):
            h.update(header.name.encode() + header.read_bytes())
    out_dir = paths.cache_dir() / "tools" / h.hexdigest()[:20]
    binary = out_dir / source.stem
    if binary.is_file():
        paths.mark_used(out_dir)
        return binary
    with paths.cache_writes(out_dir, f"the guest tool {source.stem}"):
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".cc-")
        os.close(fd)
        argv = [cc, *flags]
        argv += [f"-I{inc}" for inc in include_dirs]
        argv += ["-o", tmp, str(source)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            if "No space left on device" in proc.stderr:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir))
            raise ImageError(f"building guest tool {source} failed:\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
    return binary


def standard_tools() -> tuple[GuestFile, ...]:
    """The testbed's own guest tools, placed in ``/usr/local/bin``."""
    return tuple(
        GuestFile(f"/usr/local/bin/{src.stem}", build_tool(src), 0o755)
        for src in sorted(HERE.glob("*.c"))
    )
