"""Pure parts of ``testbed bench``: the bare floor's guest image and the paired ratio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.cli import bench
from testbed.guest.initramfs import BUSYBOX


@pytest.mark.skipif(not BUSYBOX.is_file(), reason=f"{BUSYBOX} not installed (busybox-static)")
def test_the_floor_boots_busybox_into_an_init_that_powers_off(tmp_path: Path) -> None:
    image = bench.poweroff_initramfs(tmp_path / "floor.cpio")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=image.read_bytes(),
        cwd=root,
        check=True,
        timeout=30,
    )
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "bin", "bin/busybox", "init",
    ]  # fmt: skip
    init = (root / "init").read_text()
    assert init.startswith("#!/bin/busybox sh\n")
    assert "poweroff -f" in init
    assert (root / "init").stat().st_mode & 0o111
    assert (root / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()


def test_paired_ratio_is_the_median_of_per_run_ratios() -> None:
    # per run: 2.0, 1.5, 1.2 -> median 1.5 (the ratio of the medians, 3.0 / 2.0, is 1.5 too)
    assert bench._paired_ratio([1.0, 2.0, 10.0], [2.0, 3.0, 12.0]) == 1.5
    # one slow bare boot paired with a fast exec does not drag the median
    assert bench._paired_ratio([1.0, 1.0, 1.0, 9.0], [1.2, 1.3, 1.4, 1.0]) == 1.25
    assert bench._paired_ratio([2.0], [2.5]) == 1.25
