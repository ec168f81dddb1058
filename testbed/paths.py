"""Where the testbed finds its data and keeps its caches.

- the project's data -- device definitions and machine specs (``qemu-devices/``, with the P2P
  guest drivers), kernel config fragments (``guest-kernel-config/``) and the reference suite
  (``tests/p2p/``) -- lives at the top of a checkout, next to the package. An installed wheel
  carries the same folders inside the package, under ``testbed/_data/`` (the build maps them
  there; see ``setup.py``), and :func:`data_root` picks whichever exists;
- caches live under ``$XDG_CACHE_HOME/p2p-testbed`` (default ``~/.cache/p2p-testbed``), each
  entry keyed by a content hash, so a cache is never stale, only unused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from testbed.errors import CacheError

PACKAGE_DIR = Path(__file__).resolve().parent
#: The checkout holding the package (meaningful only when running from a checkout).
PROJECT_ROOT = PACKAGE_DIR.parent
#: Where a wheel puts the project's data folders.
PACKAGED_DATA = PACKAGE_DIR / "_data"
#: The folders, relative to the checkout, that a wheel carries under :data:`PACKAGED_DATA`.
DATA_FOLDERS = ("qemu-devices", "guest-kernel-config", "scenarios", "tests/p2p")


def data_root() -> Path:
    """The folder holding ``qemu-devices/``, ``guest-kernel-config/`` and ``tests/p2p/``: the
    installed package's data if there is any, else the checkout."""
    return PACKAGED_DATA if PACKAGED_DATA.is_dir() else PROJECT_ROOT


def devices_dir() -> Path:
    """``qemu-devices/``: one folder per emulated device, plus ``machines/``."""
    return Path(os.environ.get("TESTBED_DEVICES_DIR", data_root() / "qemu-devices"))


def kernel_config_dir() -> Path:
    """``guest-kernel-config/``: config fragments, patch series and named kernels
    (``TESTBED_KERNEL_CONFIG_DIR`` overrides it, for tests)."""
    return Path(os.environ.get("TESTBED_KERNEL_CONFIG_DIR", data_root() / "guest-kernel-config"))


def scenarios_dir() -> Path:
    """``scenarios/``: scenario files, e.g. the claims run through the scenario engine."""
    return data_root() / "scenarios"


def suite_dir() -> Path:
    """``tests/p2p/``: the reference suite ``testbed run`` runs."""
    return data_root() / "tests" / "p2p"


def cache_dir() -> Path:
    """The root of every cache, created on first use."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "p2p-testbed"
    with cache_writes(path, "the cache folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


#: what a full, read-only or forbidden cache raises
_CACHE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def cache_writes(folder: Path, what: str) -> Iterator[None]:
    """Turn a cache write that fails for lack of room or permission into a
    :class:`CacheError` that names ``folder`` and the fix; other errors pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _CACHE_ERRNOS:
            raise
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2p-testbed"
        raise CacheError(
            f"cannot write {what} in {folder}: {exc.strerror}. Fix: free space there or make "
            f"it writable, or point XDG_CACHE_HOME at a writable folder with room (a few "
            f"hundred MB); everything under {root} is rebuilt on demand, so it may be deleted"
        ) from exc


@contextlib.contextmanager
def cache_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created, with its folder, if need be):
    one process at a time builds a cache entry; the others wait, then find it built."""
    with cache_writes(lock_file.parent, f"{what}'s lock file"):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_file.open("w")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mark_used(entry: Path) -> None:
    """Record that a cache entry was just used (its mtime is its last use; see
    :mod:`testbed.cache`). A read-only cache only loses the record, never the run."""
    with contextlib.suppress(OSError):
        os.utime(entry)
