"""Tests that use the real kernel source (Debian's linux-source tarball) and the real build
steps (merge_config.sh, olddefconfig, patch, make). Everything here is marked ``kbuild``.

They share the testbed's real cache (``~/.cache/p2p-testbed/kbuild``): the source is unpacked
once and the work tree of ``base`` is reused, so after the first run each test costs seconds
to a minute, not a kernel build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed import paths


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/kbuild/" in str(item.path):
            item.add_marker(pytest.mark.kbuild)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of guest-kernel-config/ that a test may add kernels and series to."""
    real = paths.PROJECT_ROOT / "guest-kernel-config"
    copy = tmp_path / "guest-kernel-config"
    shutil.copytree(real, copy)
    monkeypatch.setenv("TESTBED_KERNEL_CONFIG_DIR", str(copy))
    return copy
