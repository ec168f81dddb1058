"""The P2P guest drivers: ``p2p_exporter.ko``, ``p2p_importer.ko`` and ``p2pctl``, built and cached.

The sources live in ``qemu-devices/p2p/`` (see its README for the interface). The modules are
built out of tree with ``make -C <kernel build tree> M=<a copy in a temp dir> W=1``, so the
checkout never fills with build products, and cached under
``~/.cache/p2p-testbed/modules/<key>/``. The key hashes every source file (path and bytes), the
kernel release and origin, the compiler's version and, when the build tree has them, its
``.config`` and ``Module.symvers``: an edit or another kernel rebuilds, an unchanged input never
does. The origin matters because neither the release nor ``Module.symvers`` (no CRCs without
``MODVERSIONS``) changes when a patch only changes a header such as ``struct
vm_operations_struct``: two kernels of one release built from different series prefixes must
not share a module. Kernels from the content-keyed caches name their key in the origin; for a
user's own image or tree the image's digest stands in for it.

``p2pctl`` is a user-space program, built by :func:`testbed.guest.tools.build_tool`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.errors import DependencyError, KernelError, ModuleBuildError
from testbed.guest.tools import build_tool
from testbed.kernel.image import Kernel

log = logging.getLogger(__name__)

#: Module names in load order: the importer uses symbols the exporter exports.
MODULE_NAMES = ("p2p_exporter", "p2p_importer")
BUILD_TIMEOUT = 600.0
_SOURCE_SUFFIXES = (".c", ".h")
_SOURCE_NAMES = ("Makefile", "Kbuild")
#: ``file.c:12:3: error: ...`` (gcc), ``file.c:12: error`` (older tools).
_ERROR_RE = re.compile(
    r"^(?P<file>\S+?\.[ch]):(?P<line>\d+):(?:\d+:)?\s*(?:fatal )?error:(?P<msg>.*)$"
)
_MODPOST_RE = re.compile(r"^(?:ERROR|FATAL): (?P<msg>.*)$")


@dataclass(frozen=True)
class P2PBuild:
    """Where the built P2P guest drivers are."""

    exporter_ko: Path
    importer_ko: Path
    p2pctl: Path  #: the program; the guest expects it as ``/usr/local/bin/p2pctl``
    key: str  #: the cache key, naming the inputs

    @property
    def modules(self) -> tuple[Path, Path]:
        """The modules in the order they must be loaded."""
        return (self.exporter_ko, self.importer_ko)


def source_dir() -> Path:
    """``qemu-devices/p2p/``: the drivers' sources."""
    return paths.devices_dir() / "p2p"


def source_files(src: Path) -> list[Path]:
    """Every file the build reads, sorted, relative to ``src``."""
    return sorted(
        p.relative_to(src)
        for p in src.rglob("*")
        if p.is_file()
        and (p.suffix in _SOURCE_SUFFIXES or p.name in _SOURCE_NAMES)
        and not p.name.endswith(".mod.c")  # kbuild's, if someone ran make in the checkout
        and not p.name.startswith(".")
    )


def _compiler_version(cc: str) -> str:
    try:
        proc = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, check=True, timeout=30
        )
    except FileNotFoundError as exc:
        raise DependencyError(f"{cc} not found; install it with 'apt-get install gcc'") from exc
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DependencyError(f"'{cc} --version' failed: {exc}") from exc
    return proc.stdout.splitlines()[0] if proc.stdout else cc


def cache_key(kernel: Kernel, src: Path, files: list[Path], compiler: str) -> str:
    """The cache key of a build of ``files`` (relative to ``src``) for ``kernel``."""
    h = hashlib.sha256()
    for rel in files:
        data = (src / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    h.update(f"release\0{kernel.release}\0compiler\0{compiler}\0".encode())
    h.update(f"origin\0{kernel.origin}\0".encode())
    if kernel.image.is_file() and not kernel.image.resolve().is_relative_to(paths.cache_dir()):
        with kernel.image.open("rb") as f:
            h.update(b"image\0" + hashlib.file_digest(f, "sha256").digest())
    if kernel.build is not None:
        for name in (".config", "Module.symvers"):
            path = kernel.build / name
            if path.is_file():
                h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def first_error(output: str) -> tuple[str | None, str | None]:
    """``(path:line, message)`` of the first compiler error in ``output``, else a modpost one."""
    fallback: tuple[str | None, str | None] = (None, None)
    for line in output.splitlines():
        match = _ERROR_RE.match(line.strip())
        if match:
            return f"{match['file']}:{match['line']}", match["msg"].strip()
        modpost = _MODPOST_RE.match(line.strip())
        if modpost and fallback == (None, None):
            fallback = (None, modpost["msg"].strip())
    return fallback


def _make(kernel_build: Path, work: Path) -> subprocess.CompletedProcess[str]:
    argv = ["make", "-C", str(kernel_build), f"M={work}", "W=1", f"-j{os.cpu_count() or 1}"]
    try:
        return subprocess.run(
            [*argv, "modules"],
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise DependencyError("make not found; install it with 'apt-get install make'") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelError(
            f"building the P2P guest modules took longer than {BUILD_TIMEOUT:.0f} s: "
            f"{' '.join(argv)}"
        ) from exc


def build_p2p_modules(kernel: Kernel, *, cc: str = "gcc", src: Path | None = None) -> P2PBuild:
    """Build (or find in the cache) the P2P guest modules for ``kernel``, and ``p2pctl``.

    ``src`` is a directory laid out like ``qemu-devices/p2p/`` (the default): ``testbed
    mutants`` builds patched copies this way. The cache key hashes the sources, so each
    variant is built once and never mixed up with another.

    Raises :class:`ModuleBuildError` (a :class:`~testbed.errors.KernelError`) with the compiler
    output when the build fails, naming the source ``file:line`` of the first error.
    """
    if kernel.build is None:
        raise KernelError(
            f"kernel {kernel.describe()} has no build tree to compile guest modules against; "
            "pass --build DIR (or use the stock kernel, which brings its headers)"
        )
    src = source_dir() if src is None else src.resolve()
    files = source_files(src)
    if not files:
        raise KernelError(f"{src}: no driver sources found (expected Makefile and *.c)")
    key = cache_key(kernel, src, files, _compiler_version(cc))
    out = paths.cache_dir() / "modules" / key
    result = P2PBuild(
        exporter_ko=out / f"{MODULE_NAMES[0]}.ko",
        importer_ko=out / f"{MODULE_NAMES[1]}.ko",
        p2pctl=build_tool(src / "p2pctl" / "p2pctl.c", include_dirs=(src / "include" / "uapi",)),
        key=key,
    )
    if all(ko.is_file() for ko in result.modules):
        paths.mark_used(out)
        return result

    with paths.cache_writes(out, "the P2P guest modules"):
        out.mkdir(parents=True, exist_ok=True)
    # one build of an entry at a time across processes (each .ko is renamed into place
    # anyway, so a reader never sees half a file; the lock saves the duplicate build)
    with paths.cache_lock(out / ".lock", "the P2P guest modules"):
        # another process (a pytest-xdist worker, a second testbed run) may have built these
        # while this one waited for the lock
        if all(ko.is_file() for ko in result.modules):
            return result
        _build_into(out, result, kernel, kernel.build, src, files)
    return result


def _build_into(
    out: Path, result: P2PBuild, kernel: Kernel, build: Path, src: Path, files: list[Path]
) -> None:
    """Build the modules in a private copy of ``src`` and rename them into ``out``."""
    with tempfile.TemporaryDirectory(prefix="p2p-modules-") as tmp:
        work = Path(tmp) / "p2p"
        for rel in files:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, work / rel)
        log.info(
            "building the P2P guest modules for %s (make W=1, cached afterwards)...", kernel.release
        )
        started = time.monotonic()
        proc = _make(build, work)
        output = (proc.stdout + proc.stderr).replace(f"{work}/", f"{src}/")
        if proc.returncode != 0:
            location, message = first_error(output)
            where = f" at {location}" if location else ""
            tail = "\n    ".join(output.rstrip().splitlines()[-40:])
            raise ModuleBuildError(
                f"building the P2P guest modules against {kernel.describe()} failed{where}: "
                f"{message or f'make exited with {proc.returncode}'}\n"
                f"  command: make -C {build} M=<copy of {src}> W=1 modules\n"
                f"  output:\n    {tail}",
                output=output,
                location=location,
            )
        for name, dest in zip(MODULE_NAMES, result.modules, strict=True):
            built = work / f"{name}.ko"
            if not built.is_file():
                raise ModuleBuildError(
                    f"make succeeded but produced no {name}.ko in {src}",
                    output=output,
                    location=None,
                )
            with paths.cache_writes(out, f"{name}.ko"):
                fd, partial = tempfile.mkstemp(dir=out, prefix=f".{name}-")
                os.close(fd)
                shutil.copyfile(built, partial)
                os.replace(partial, dest)
    log.info("built the P2P guest modules in %.1f s (%s)", time.monotonic() - started, out)
