"""What the cache under ``~/.cache/p2p-testbed`` holds, and pruning what has not been used.

Every cache of the testbed is keyed by content, so an entry is never wrong, only unused: a
kernel built for a bisect prefix, the guest modules for a kernel since rebuilt, an initramfs
of an older guest image. Nothing removes them on its own, and a few bisects add gigabytes.

Each place that takes an entry from the cache marks it used (:func:`testbed.paths.mark_used`
sets the entry's mtime to now), so an entry's mtime is its last use. ``testbed cache prune``
removes the entries of the kinds below whose last use is older than a bound. What is not an
entry is never touched: ccache (bounded by its own size limit), locks, the records of which
stock kernel is current (and the entries they name), the accelerator probe's result.

An entry in use while it is pruned would have been marked at that use, so only a run that
started more than the bound ago and still holds an old entry could lose it; the default bound
(30 days) makes that a non-case.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: (kind, folder relative to the cache root, what one entry is); entries are the folder's
#: children, except for ``initramfs`` where an entry is ``<key>.cpio`` with its ``<key>.json``
KINDS: tuple[tuple[str, str, str], ...] = (
    ("built kernels", "kbuild/kernels", "testbed kernel build outputs"),
    ("kernel sources", "kbuild/sources", "unpacked kernel source trees"),
    ("kernel build trees", "kbuild/work", "incremental O= trees, one per source and config"),
    ("stock kernels", "kernels", "Debian kernel packages, unpacked"),
    ("tree modules", "kernels/tree-modules", "modules_install of --kernel DIR trees"),
    ("guest modules", "modules", "the P2P drivers built for one kernel"),
    ("initramfs", "initramfs", "guest base archives"),
    ("guest tools", "tools", "static guest programs (p2pctl, ...)"),
    ("kselftests", "kselftests", "static kselftest programs (hmm-tests, ...)"),
)
#: names inside those folders that are not entries
_NOT_ENTRIES = frozenset({"tree-modules", "tree-digests"})
DAY = 86400.0


@dataclass(frozen=True)
class Entry:
    kind: str
    path: Path  #: the entry (a folder, or an initramfs archive)
    size: int  #: bytes on disk, companions included (a hard-linked file counts once)
    last_used: float  #: epoch seconds (the entry's mtime)
    companions: tuple[Path, ...] = ()  #: files that go with it (an archive's .json)

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.last_used) / DAY


class _Sizer:
    """Bytes on disk per entry, each hard-linked file counted once, in the first entry that
    holds it (a kernel build tree's sources are hard links into the unpacked source tree,
    which is listed first)."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def file(self, path: str) -> int:
        try:
            st = os.lstat(path)
        except OSError:
            return 0
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in self.seen:
                return 0
            self.seen.add((st.st_dev, st.st_ino))
        return int(st.st_blocks) * 512

    def __call__(self, path: Path) -> int:
        if path.is_symlink() or not path.is_dir():
            return self.file(str(path))
        return sum(
            self.file(os.path.join(folder, name))
            for folder, _dirs, files in os.walk(path)
            for name in files
        )


def _current_stock_entries(root: Path) -> set[str]:
    """The stock kernel entries the ``current-<flavour>.json`` records name (kept always)."""
    keep = set()
    for record in (root / "kernels").glob("current-*.json"):
        try:
            keep.add(str(json.loads(record.read_text())["entry"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return keep


def scan(root: Path) -> Iterator[Entry]:
    """Every cache entry under ``root``, kind by kind (in-progress temp folders skipped)."""
    keep = _current_stock_entries(root)
    size = _Sizer()
    for kind, rel, _what in KINDS:
        folder = root / rel
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            name = child.name
            if name.startswith(".") or name in _NOT_ENTRIES or name.endswith((".json", ".lock")):
                continue
            if kind == "stock kernels" and (name in keep or not child.is_dir()):
                continue
            companions: tuple[Path, ...] = ()
            if kind == "initramfs":
                if child.suffix != ".cpio":
                    continue
                companions = tuple(p for p in (child.with_suffix(".json"),) if p.exists())
            elif not child.is_dir():
                continue
            try:
                mtime = child.stat().st_mtime
            except OSError:
                continue
            nbytes = size(child) + sum(size(p) for p in companions)
            yield Entry(kind, child, nbytes, mtime, companions)


def stale(
    entries: Iterable[Entry], older_than_days: float, now: float | None = None
) -> list[Entry]:
    now = time.time() if now is None else now
    return [e for e in entries if e.age_days(now) > older_than_days]


def remove(entry: Entry) -> None:
    """Delete ``entry``: renamed aside first, so a reader never sees it half deleted."""
    aside = entry.path.with_name(f".prune-{entry.path.name}-{os.getpid()}")
    entry.path.rename(aside)
    for companion in entry.companions:
        companion.unlink(missing_ok=True)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
