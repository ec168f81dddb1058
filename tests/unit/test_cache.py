"""testbed.cache and ``testbed cache``: which entries exist, their sizes, what prune removes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from testbed import cache, paths
from testbed.cli import main

DAY = 86400


def entry(path: Path, age_days: float, size: int = 4096) -> Path:
    """A cache entry folder with one file, last used ``age_days`` ago."""
    path.mkdir(parents=True)
    (path / "payload").write_bytes(b"x" * size)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = tmp_path / "p2p-testbed"
    entry(r / "kbuild" / "kernels" / "oldkernel", 40)
    entry(r / "kbuild" / "kernels" / "newkernel", 1)
    (r / "kbuild" / "kernels" / ".inprogress-x").mkdir()
    entry(r / "modules" / "oldmod", 90)
    entry(r / "kernels" / "stockcurrent", 400)
    entry(r / "kernels" / "stockold", 400)
    (r / "kernels" / "current-cloud-amd64.json").write_text(json.dumps({"entry": "stockcurrent"}))
    (r / "kernels" / "tree-digests").mkdir()
    ramfs = r / "initramfs"
    ramfs.mkdir()
    (ramfs / "abc.cpio").write_bytes(b"c" * 100)
    (ramfs / "abc.json").write_text("{}")
    when = time.time() - 50 * DAY
    os.utime(ramfs / "abc.cpio", (when, when))
    (r / "kbuild" / "ccache").mkdir()
    return r


def names(entries: list[cache.Entry]) -> set[str]:
    return {e.path.name for e in entries}


def test_scan_finds_entries_and_skips_temp_folders_records_and_the_current_stock_kernel(
    root: Path,
) -> None:
    found = list(cache.scan(root))
    assert names(found) == {"oldkernel", "newkernel", "oldmod", "stockold", "abc.cpio"}
    kinds = {e.path.name: e.kind for e in found}
    assert kinds["oldkernel"] == "built kernels"
    assert kinds["stockold"] == "stock kernels"
    assert kinds["abc.cpio"] == "initramfs"


def test_stale_uses_the_last_use_and_the_bound(root: Path) -> None:
    found = list(cache.scan(root))
    assert names(cache.stale(found, 30)) == {"oldkernel", "oldmod", "stockold", "abc.cpio"}
    assert names(cache.stale(found, 60)) == {"oldmod", "stockold"}
    assert names(cache.stale(found, 0)) == names(found)


def test_a_hard_linked_file_counts_once(tmp_path: Path) -> None:
    src = entry(tmp_path / "kbuild" / "sources" / "s", 1, size=8192)
    work = tmp_path / "kbuild" / "work" / "w"
    work.mkdir(parents=True)
    os.link(src / "payload", work / "payload")
    sizes = {e.path.name: e.size for e in cache.scan(tmp_path)}
    assert sizes["s"] >= 8192
    assert sizes["w"] == 0


def test_mark_used_makes_an_old_entry_recent(root: Path) -> None:
    old = root / "modules" / "oldmod"
    paths.mark_used(old)
    assert "oldmod" not in names(cache.stale(cache.scan(root), 30))


def test_mark_used_on_a_missing_entry_is_harmless(tmp_path: Path) -> None:
    paths.mark_used(tmp_path / "gone")


def test_prune_dry_run_removes_nothing(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--older-than", "30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 4 entries" in out
    assert (root / "kbuild" / "kernels" / "oldkernel").is_dir()


def test_prune_removes_stale_entries_with_their_companions_and_keeps_the_rest(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "prune", "--older-than", "30"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert not (root / "kbuild" / "kernels" / "oldkernel").exists()
    assert not (root / "modules" / "oldmod").exists()
    assert not (root / "kernels" / "stockold").exists()
    assert not (root / "initramfs" / "abc.cpio").exists()
    assert not (root / "initramfs" / "abc.json").exists()
    assert (root / "kbuild" / "kernels" / "newkernel").is_dir()
    assert (root / "kernels" / "stockcurrent").is_dir()
    assert (root / "kernels" / "current-cloud-amd64.json").is_file()
    assert (root / "kbuild" / "ccache").is_dir()
    leftovers = [p.name for p in root.rglob(".prune-*")]
    assert leftovers == []


def test_listing_shows_every_kind(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "-l"]) == 0
    out = capsys.readouterr().out
    for kind, _rel, _what in cache.KINDS:
        assert kind in out
    assert "oldkernel" in out


def test_a_negative_bound_is_an_error(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--older-than", "-1"]) == 2
    assert "--older-than" in capsys.readouterr().err
