"""Where a guest kernel's source comes from, and its identity for the build cache.

Three kinds of source:

- ``debian`` (the default): the newest ``/usr/src/linux-source-*.tar.xz``, installed by the
  Debian package ``linux-source-6.12`` (ci/setup.sh installs it);
- a tarball (``.tar``, ``.tar.xz``, ``.tar.gz``, ...) holding one top-level kernel tree;
- a git checkout: its committed ``HEAD`` (``git archive``); uncommitted changes are not built,
  and a notice says so.

The identity is a content hash (a tarball's SHA-256, a commit id), so a cache entry is never
stale. Hashing a 140 MB tarball takes a second or two, so the hash is memoised by path, size,
mtime and inode in ``source-ids.json``: an unchanged request stays well under two seconds.
A source is unpacked once into ``sources/<id>/tree`` (atomically: a temp folder renamed into
place) and never modified afterwards; builds work on hard-linked copies of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.errors import ConfigError, DependencyError, KernelError

log = logging.getLogger(__name__)

DEBIAN = "debian"
DEBIAN_GLOB = "linux-source-*.tar.xz"
DEBIAN_DIR = Path("/usr/src")
_TARBALL = re.compile(r"\.(tar|tar\.xz|txz|tar\.gz|tgz|tar\.bz2|tbz2|tar\.zst)$")
#: files every kernel tree has and the build needs
KERNEL_MARKERS = ("Makefile", "Kconfig", "scripts/kconfig/merge_config.sh", "arch/x86/Kconfig")


@dataclass(frozen=True)
class Source:
    """A resolved kernel source: what it is, where, and its content identity."""

    kind: str  #: ``tarball`` or ``git``
    path: Path
    identity: str  #: ``sha256:<hex>`` of a tarball, ``git:<commit>`` of a checkout
    label: str  #: one line for people, e.g. ``linux-source-6.12.tar.xz``

    @property
    def key(self) -> str:
        """A short, filesystem-safe form of the identity."""
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]


def _version_key(path: Path) -> tuple[int, ...]:
    match = re.search(r"linux-source-(\d+(?:\.\d+)*)", path.name)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def newest_debian_source(folder: Path = DEBIAN_DIR) -> Path:
    """The newest ``linux-source-*.tar.xz`` in ``folder``."""
    found = sorted(folder.glob(DEBIAN_GLOB), key=_version_key)
    if not found:
        raise DependencyError(
            f"no {folder}/{DEBIAN_GLOB}: install Debian's kernel source with "
            "'apt-get install linux-source-6.12' (ci/setup.sh does), or give the kernel "
            "description a 'tree:' (a tarball or a git checkout)"
        )
    return found[-1]


def looks_like_kernel_tree(path: Path) -> list[str]:
    """The kernel-tree marker files missing under ``path`` (empty: it is one)."""
    return [m for m in KERNEL_MARKERS if not (path / m).is_file()]


def tarball_digest(path: Path, memo_file: Path) -> str:
    """SHA-256 of ``path``, memoised by (path, size, mtime, inode) in ``memo_file``."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    memo: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(memo_file.read_text())
        if isinstance(loaded, dict):
            memo = loaded
    entry = memo.get(str(path))
    if entry is not None and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    log.info("hashing %s (once; remembered by size and mtime)", path)
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}")
    tmp.write_text(json.dumps(memo, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, memo_file)
    return digest


def _git(path: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DependencyError("git not found, needed for a git kernel source") from exc
    if proc.returncode != 0:
        raise KernelError(f"{path}: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve(tree: str, base: Path, memo_file: Path, where: str = "") -> Source:
    """Resolve a kernel description's ``tree:`` value (``debian``, a tarball or a git
    checkout; relative paths are relative to ``base``) to a :class:`Source`."""
    if tree == DEBIAN:
        path = newest_debian_source()
    else:
        path = (base / tree).resolve() if not Path(tree).is_absolute() else Path(tree)
    prefix = f"{where}: " if where else ""
    if path.is_file():
        if not _TARBALL.search(path.name):
            raise ConfigError(
                f"{prefix}{path} is a file but not a tarball (.tar, .tar.xz, .tar.gz, ...); "
                "point 'tree:' at a kernel tarball or a git checkout"
            )
        digest = tarball_digest(path, memo_file)
        return Source("tarball", path, f"sha256:{digest}", path.name)
    if path.is_dir():
        missing = looks_like_kernel_tree(path)
        if missing:
            raise KernelError(
                f"{prefix}{path} is not a kernel source tree (missing {', '.join(missing)}); "
                "point 'tree:' at a Linux checkout or tarball"
            )
        if not (path / ".git").exists():
            raise ConfigError(
                f"{prefix}{path} is a kernel tree but not a git checkout; the build cache needs "
                "a content identity: commit it to git, or pack it with 'tar -cJf'"
            )
        commit = _git(path, "rev-parse", "HEAD")
        if _git(path, "status", "--porcelain", "--untracked-files=no"):
            log.warning("%s has uncommitted changes; building its HEAD %s", path, commit[:12])
        return Source("git", path, f"git:{commit}", f"{path.name}@{commit[:12]}")
    raise ConfigError(
        f"{prefix}kernel source {path} does not exist; use 'debian' (the newest "
        f"{DEBIAN_DIR}/{DEBIAN_GLOB}), a tarball or a git checkout"
    )


def unpacked(source: Source, sources_dir: Path) -> Path:
    """The pristine tree of ``source``, unpacked on first use into ``sources_dir/<key>/tree``.

    Unpacking goes to a temp folder that is renamed into place only once it checked out as a
    kernel tree, so an interrupted or wrong unpack leaves nothing a later run would use.
    """
    final = sources_dir / source.key / "tree"
    if final.is_dir():
        paths.mark_used(final.parent)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=final.parent))
    try:
        log.info("unpacking %s (once per source)", source.label)
        if source.kind == "tarball":
            proc = subprocess.run(
                ["tar", "-xf", str(source.path), "-C", str(tmp)],
                check=False,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode != 0:
                raise KernelError(f"{source.path}: cannot unpack: {proc.stderr.strip()[-500:]}")
            entries = list(tmp.iterdir())
            root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        else:
            archive = subprocess.Popen(
                ["git", "-C", str(source.path), "archive", "--format=tar", "HEAD"],
                stdout=subprocess.PIPE,
            )
            assert archive.stdout is not None
            root = tmp / "git"
            root.mkdir()
            untar = subprocess.run(
                ["tar", "-xf", "-", "-C", str(root)], stdin=archive.stdout, check=False
            )
            archive.stdout.close()
            if archive.wait(timeout=900) != 0 or untar.returncode != 0:
                raise KernelError(f"{source.path}: git archive HEAD | tar -x failed")
        missing = looks_like_kernel_tree(root)
        if missing:
            raise KernelError(
                f"{source.path} does not hold a kernel source tree (missing "
                f"{', '.join(missing)} at its top level); point 'tree:' at a Linux tarball"
            )
        if (root / ".config").exists() or (root / "include" / "config").exists():
            raise KernelError(
                f"{source.path}: the tree is configured (has .config); out-of-tree builds need "
                "a clean source: run 'make mrproper' there (or use a clean tarball)"
            )
        root.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
