"""Small C programs the testbed ships into the guest, built on the host and cached.

Each ``*.c`` here (and any extra source a caller names) is compiled with ``gcc -O2 -Wall
-Werror`` into ``~/.cache/p2p-testbed/tools/<hash>/<name>``, the hash covering the source,
the flags and the compiler's version, so an edit rebuilds and an unchanged tool never does.
They are linked statically against musl (``musl-gcc``, 40-80 KB each; ``build_tool(...,
static=False)`` links dynamically against the host's C library instead): under TCG the dynamic
loader costs a guest ~50 ms per run of a dynamic binary, a static one ~10 ms, and with no
dynamic tool a ``testbed exec`` guest needs no C library at all (:mod:`testbed.guest.initramfs`
adds the libraries a dynamic file needs): 2 MB less to load and unpack, ~60 ms under TCG. A
static glibc binary would instead add ~0.8 MB per tool. The kernel's UAPI headers, which musl
does not ship, come from the host's (linux-libc-dev), searched after musl's own.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed import paths
from testbed.errors import DependencyError, ImageError
from testbed.guest.initramfs import GuestFile, remembered

HERE = Path(__file__).parent
_MUSL = "musl-gcc"
#: where the host keeps the kernel's UAPI headers (linux/, asm/): x86_64 Debian
_UAPI = ("/usr/include/x86_64-linux-gnu", "/usr/include")


@functools.lru_cache(maxsize=8)
def compiler_version(cc: str) -> str:
    """The first line of ``cc --version``, remembered across processes while the compiler's
    executables (``cc`` and gcc, which musl-gcc runs) are unchanged: asking costs every
    command that boots a guest a few compiler runs before QEMU can start."""
    found = shutil.which(cc)
    if found is None:
        package = "musl-tools" if cc == _MUSL else "gcc"
        raise DependencyError(f"{cc} not found; install it with 'apt-get install {package}'")
    gcc = shutil.which("gcc")
    files = [Path(found).resolve(), *([Path(gcc).resolve()] if gcc else [])]
    return remembered("cc-version", files, lambda: _ask_version(cc))


def _ask_version(cc: str) -> str:
    try:
        out = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DependencyError(f"'{cc} --version' failed: {exc}") from exc
    except FileNotFoundError as exc:
        package = "musl-tools" if cc == _MUSL else "gcc"
        raise DependencyError(
            f"{cc} not found; install it with 'apt-get install {package}'"
        ) from exc
    return out.splitlines()[0] if out else cc


def build_tool(
    source: Path, *, include_dirs: tuple[Path, ...] = (), cc: str = "gcc", static: bool = True
) -> Path:
    """Compile ``source`` (cached by content) and return the binary's path; ``static`` (the
    default): with musl-gcc, statically linked and stripped."""
    flags = ["-O2", "-Wall", "-Wextra", "-Werror"]
    if static:
        cc = _MUSL
        flags += ["-static", "-s", *(f"-idirafter{d}" for d in _UAPI)]
    h = hashlib.sha256(source.read_bytes())
    h.update(compiler_version(cc).encode())
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
