"""A cache that cannot be written ends the command with one line naming the folder and the
fix, not an ``OSError`` traceback: a read-only cache, and a cache whose disk fills up while
the guest initramfs is being built. Both are real file systems (tmpfs mounts; root only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.kernel.image import Kernel

TESTBED = str(Path(sys.executable).parent / "testbed")

Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """Mount a tmpfs with the given options under ``tmp_path``; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _boot(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTBED, "boot", "--no-p2p", "--accel", "tcg", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("testbed: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_a_read_only_cache_names_the_folder_and_the_fix(tmpfs: Mount) -> None:
    cache = tmpfs("ro,size=1m")
    line = _one_error_line(_boot(cache))
    assert f"{cache}/p2p-testbed" in line, line
    assert "Read-only file system" in line and "XDG_CACHE_HOME" in line, line


def test_a_cache_that_fills_up_while_building_the_initramfs_names_it(
    tmpfs: Mount, testbed_kernel: Kernel
) -> None:
    """The kernel is given by path, so nothing but the guest tools (~1 MB) and the
    initramfs (several MB) is written to the 3 MB cache: the initramfs does not fit."""
    assert testbed_kernel.modules is not None
    cache = tmpfs("size=3m")
    proc = _boot(
        cache, "--kernel", str(testbed_kernel.image), "--modules", str(testbed_kernel.modules)
    )
    line = _one_error_line(proc)
    assert f"{cache}/p2p-testbed/" in line, line
    assert "No space left on device" in line and "XDG_CACHE_HOME" in line, line
