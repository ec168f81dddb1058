"""Where the testbed finds its data and keeps its caches.

- the project's data (device definitions, machine specs, guest drivers, config fragments) lives
  in the checkout next to the package: ``qemu-devices/`` and ``guest-kernel-config/``;
- caches live under ``$XDG_CACHE_HOME/p2p-testbed`` (default ``~/.cache/p2p-testbed``), each
  entry keyed by a content hash, so a cache is never stale, only unused.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def devices_dir() -> Path:
    """``qemu-devices/``: one folder per emulated device, plus ``machines/``."""
    return Path(os.environ.get("TESTBED_DEVICES_DIR", PROJECT_ROOT / "qemu-devices"))


def kernel_config_dir() -> Path:
    """``guest-kernel-config/``: config fragments, patch series and named kernels
    (``TESTBED_KERNEL_CONFIG_DIR`` overrides it, for tests)."""
    return Path(os.environ.get("TESTBED_KERNEL_CONFIG_DIR", PROJECT_ROOT / "guest-kernel-config"))


def cache_dir() -> Path:
    """The root of every cache, created on first use."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "p2p-testbed"
    path.mkdir(parents=True, exist_ok=True)
    return path
