"""A built kernel tree as the kernel under test: ``cd linux && make && testbed run --kernel .``.

From a tree (the source tree, or the ``O=`` output folder) after ``make``:

- the image is ``arch/x86/boot/bzImage``; its release must match
  ``include/config/kernel.release`` (else the tree changed since the image was built);
- the modules are installed with ``make modules_install INSTALL_MOD_PATH=<staging>`` into
  ``~/.cache/p2p-testbed/kernels/tree-modules/<key>/``, where ``<key>`` hashes the release,
  the ``.config`` and the bytes of every module ``modules.order`` lists: a rebuilt module gets
  a new staging folder, an unchanged tree reuses its own. So that an unchanged tree is not
  re-read on every command, each file's hash is remembered with its size, inode and mtime;
- the tree itself is the kbuild tree the testbed's out-of-tree guest drivers build against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed import paths
from testbed.errors import DependencyError, KernelError
from testbed.kernel.image import Kernel, bzimage_release, user_kernel

log = logging.getLogger(__name__)

IMAGE = Path("arch/x86/boot/bzImage")
RELEASE_FILE = Path("include/config/kernel.release")
INSTALL_TIMEOUT = 900.0


def is_tree(path: Path) -> bool:
    """Whether ``path`` looks like a kernel tree (or kbuild output folder) rather than a file."""
    return path.is_dir() and (path / "Makefile").is_file()


def _modules_enabled(tree: Path) -> bool:
    try:
        config = (tree / ".config").read_text(errors="replace")
    except FileNotFoundError as exc:
        raise KernelError(
            f"{tree}: no .config; configure and build the kernel first "
            "(e.g. 'make defconfig && make -j$(nproc)')"
        ) from exc
    return "\nCONFIG_MODULES=y\n" in f"\n{config}"


def module_files(tree: Path) -> list[str]:
    """The built modules, relative to ``tree``, as ``modules.order`` lists them (``.o`` or
    ``.ko`` entries, depending on the kernel version)."""
    try:
        lines = (tree / "modules.order").read_text().split()
    except FileNotFoundError as exc:
        raise KernelError(
            f"{tree}: CONFIG_MODULES=y but no modules.order; run 'make' (or 'make modules') "
            "in the tree first"
        ) from exc
    return [line[:-2] + ".ko" if line.endswith(".o") else line for line in lines]


class _DigestMemo:
    """SHA-256 of files under one tree, remembered across runs while size, inode and mtime
    stay the same (the way git's index avoids re-reading unchanged files)."""

    def __init__(self, tree: Path) -> None:
        name = hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:20]
        self.path = paths.cache_dir() / "kernels" / "tree-digests" / f"{name}.json"
        try:
            self.known: dict[str, list[object]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def digest(self, path: Path) -> str:
        st = path.stat()
        stamp: list[object] = [st.st_size, st.st_ino, st.st_mtime_ns]
        entry = self.known.get(str(path))
        if entry is not None and entry[:3] == stamp:
            return str(entry[3])
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self.known[str(path)] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.known))
        tmp.replace(self.path)


def modules_key(tree: Path, release: str) -> str:
    """The staging folder's key: release, ``.config`` and every listed module's bytes."""
    memo = _DigestMemo(tree)
    h = hashlib.sha256(f"release\0{release}\0".encode())
    for rel in ("modules.order", "modules.builtin", "modules.builtin.modinfo", ".config"):
        path = tree / rel
        if path.is_file():
            h.update(f"{rel}\0{memo.digest(path)}\0".encode())
    for rel in module_files(tree):
        path = tree / rel
        if not path.is_file():
            raise KernelError(
                f"{tree}: modules.order lists {rel}, which is missing; run 'make' in the tree"
            )
        h.update(f"{rel}\0{memo.digest(path)}\0".encode())
    memo.save()
    return h.hexdigest()[:20]


def staged_modules(tree: Path, release: str) -> Path:
    """``lib/modules/<release>`` of ``tree``, installed into the cache (once per content)."""
    key = modules_key(tree, release)
    root = paths.cache_dir() / "kernels" / "tree-modules"
    entry = root / key
    mod_dir = entry / "lib" / "modules" / release
    if (mod_dir / "modules.dep").is_file():
        paths.mark_used(entry)
        return mod_dir
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".install-", dir=root))
    argv = ["make", "-C", str(tree), "-s", f"INSTALL_MOD_PATH={work}", "modules_install"]
    log.info("installing the modules of %s into the cache (make modules_install)", tree)
    try:
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=INSTALL_TIMEOUT
            )
        except FileNotFoundError as exc:
            raise DependencyError("make not found; install it with 'apt-get install make'") from exc
        except subprocess.TimeoutExpired as exc:
            raise KernelError(f"{' '.join(argv)} took longer than {INSTALL_TIMEOUT:g} s") from exc
        if proc.returncode != 0:
            tail = "\n    ".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise KernelError(
                f"{tree}: 'make modules_install' failed (exit {proc.returncode}):\n    {tail}\n"
                "  fix: run 'make' in the tree, or pass --modules DIR with installed modules"
            )
        if not (work / "lib" / "modules" / release / "modules.dep").is_file():
            raise KernelError(
                f"{tree}: 'make modules_install' left no lib/modules/{release}/modules.dep; is "
                "depmod (package kmod) installed?"
            )
        try:
            work.rename(entry)
        except OSError:  # another process staged the same content meanwhile
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return mod_dir


def tree_kernel(tree: Path, modules: Path | None = None, build: Path | None = None) -> Kernel:
    """The kernel built in ``tree`` (see the module docstring). ``modules`` overrides the
    staged modules (a folder for :func:`~testbed.kernel.image.user_kernel`), ``build`` the
    kbuild tree."""
    tree = tree.resolve()
    image = tree / IMAGE
    if not image.is_file():
        raise KernelError(
            f"{tree}: no {IMAGE}; build the kernel first ('make -j$(nproc)'), or pass "
            "--kernel with the path of a bzImage"
        )
    release = bzimage_release(image)
    try:
        configured = (tree / RELEASE_FILE).read_text().strip()
    except FileNotFoundError:
        configured = release
    if configured != release:
        raise KernelError(
            f"{tree}: {IMAGE} is kernel {release!r}, but the tree is now configured as "
            f"{configured!r}; run 'make' to rebuild the image"
        )
    if modules is not None:
        return user_kernel(image, modules, build or tree)
    staged = staged_modules(tree, release) if _modules_enabled(tree) else None
    return Kernel(
        release=release,
        image=image,
        modules=staged,
        build=(build or tree).resolve(),
        origin=f"kernel tree {tree}",
    )
