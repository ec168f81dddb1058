"""Pure parts of the stock Debian kernel lookup (testbed.kernel.stock).

``apt-cache`` is never run: ``subprocess.run`` is replaced by a table of canned outputs in the
format apt-cache prints on Debian 12. Caches go to a temporary ``XDG_CACHE_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.errors import DependencyError, KernelError
from testbed.kernel import stock
from testbed.kernel.stock import Package

REL = "6.1.0-56-cloud-amd64"

DEPENDS = {
    "linux-image-cloud-amd64": f"""\
linux-image-cloud-amd64
 |Depends: linux-image-{REL}-unsigned
  Depends: linux-image-{REL}
  Depends: <linux-image-virtual>
""",
    f"linux-headers-{REL}": f"""\
linux-headers-{REL}
  Depends: linux-headers-6.1.0-56-common
  Depends: linux-kbuild-6.1
  Depends: linux-compiler-gcc-12-x86
  Depends: libc6
""",
}


def show(name: str, version: str, sha: str, size: int) -> str:
    return f"""\
Package: {name}
Source: linux
Version: {version}
Installed-Size: 2397
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Depends: libc6 (>= 2.34)
Description: something
 with a continuation line that says Version: 0 and SHA256: nope
Size: {size}
SHA256: {sha}
Description-md5: cb2f9d9e7a9e9f15256e922653025d78

"""


SHOW = {
    f"linux-image-{REL}": show(f"linux-image-{REL}", "6.1.192-2", "aa" * 32, 70_000_000),
    f"linux-headers-{REL}": show(f"linux-headers-{REL}", "6.1.192-2", "bb" * 32, 1_000_000),
    "linux-headers-6.1.0-56-common": show(
        "linux-headers-6.1.0-56-common", "6.1.192-2", "cc" * 32, 10_000_000
    ),
    "linux-kbuild-6.1": show("linux-kbuild-6.1", "6.1.192-2", "dd" * 32, 1_568_188),
}

Runner = Callable[..., subprocess.CompletedProcess[str]]


def fake_apt(
    depends: dict[str, str] | None = None, shows: dict[str, str] | None = None
) -> tuple[Runner, list[list[str]]]:
    depends = DEPENDS if depends is None else depends
    shows = SHOW if shows is None else shows
    calls: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        assert argv[0] == "apt-cache", argv
        table = depends if argv[1] == "depends" else shows
        name = argv[-1]
        if name not in table:
            return subprocess.CompletedProcess(argv, 100, "", f"E: No packages found: {name}\n")
        return subprocess.CompletedProcess(argv, 0, table[name], "")

    return run, calls


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "p2p-testbed"


def test_resolve_picks_the_four_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    run, calls = fake_apt()
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    packages = stock.resolve("cloud-amd64")
    assert [p.name for p in packages] == [
        f"linux-image-{REL}",
        f"linux-headers-{REL}",
        "linux-headers-6.1.0-56-common",
        "linux-kbuild-6.1",
    ]
    image = packages[0]
    assert image == Package(f"linux-image-{REL}", "6.1.192-2", "aa" * 32, 70_000_000)
    assert packages[3].size == 1_568_188
    assert all(c[:2] in (["apt-cache", "depends"], ["apt-cache", "show"]) for c in calls)


def test_resolve_unknown_flavour(monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = fake_apt()
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match="linux-image-rt-arm64"):
        stock.resolve("rt-arm64")


def test_resolve_meta_package_without_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    only_unsigned = {
        "linux-image-cloud-amd64": "linux-image-cloud-amd64\n"
        f"  Depends: linux-image-{REL}-unsigned\n"
    }
    run, _ = fake_apt(depends=only_unsigned)
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match="apt knows no package 'linux-image-cloud-amd64'"):
        stock.resolve()


def test_resolve_headers_without_kbuild(monkeypatch: pytest.MonkeyPatch) -> None:
    depends = dict(DEPENDS)
    depends[f"linux-headers-{REL}"] = (
        f"linux-headers-{REL}\n  Depends: linux-headers-6.1.0-56-common\n"
    )
    run, _ = fake_apt(depends=depends)
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match="common headers and kbuild"):
        stock.resolve()


def test_package_without_download_record(monkeypatch: pytest.MonkeyPatch) -> None:
    shows = dict(SHOW)
    shows["linux-kbuild-6.1"] = "Package: linux-kbuild-6.1\nVersion: 6.1.192-2\n"
    run, _ = fake_apt(shows=shows)
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match=r"no download record for linux-kbuild-6\.1"):
        stock.resolve()


def test_apt_failure_carries_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 100, "", "E: The package lists are missing\n")

    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError) as info:
        stock.resolve()
    assert "exited with 100" in str(info.value)
    assert "E: The package lists are missing" in str(info.value)


def test_missing_apt_cache_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(DependencyError, match="apt-cache not found"):
        stock.resolve()


def test_apt_timeout_is_a_kernel_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, 600)

    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match="took longer than 600 s"):
        stock.resolve()


# --- cache entries ------------------------------------------------------------------------------


def make_entry(cache: Path, key: str, flavour: str, release: str, mtime: float) -> Path:
    entry = cache / "kernels" / key
    (entry / "root" / "boot").mkdir(parents=True)
    manifest = {
        "flavour": flavour,
        "release": release,
        "packages": [
            {"name": f"linux-image-{release}", "version": "1", "sha256": "ab" * 32, "size": 1}
        ],
    }
    (entry / "manifest.json").write_text(json.dumps(manifest))
    os.utime(entry / "manifest.json", (mtime, mtime))
    return entry


def test_cached_newest_first_and_by_flavour(cache: Path) -> None:
    old = make_entry(cache, "old", "cloud-amd64", "6.1.0-1-cloud-amd64", 1_000_000)
    new = make_entry(cache, "new", "cloud-amd64", "6.1.0-2-cloud-amd64", 2_000_000)
    make_entry(cache, "rt", "rt-amd64", "6.1.0-2-rt-amd64", 3_000_000)
    kernels = stock.cached("cloud-amd64")
    assert [k.release for k in kernels] == ["6.1.0-2-cloud-amd64", "6.1.0-1-cloud-amd64"]
    newest = kernels[0]
    assert newest.image == new / "root" / "boot" / "vmlinuz-6.1.0-2-cloud-amd64"
    assert newest.modules == new / "root" / "lib" / "modules" / "6.1.0-2-cloud-amd64"
    assert newest.build == new / "root" / "usr" / "src" / "linux-headers-6.1.0-2-cloud-amd64"
    assert "linux-image-6.1.0-2-cloud-amd64 1" in newest.origin
    assert kernels[1].image.is_relative_to(old)


def test_offline_falls_back_to_newest_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_entry(cache, "a", "cloud-amd64", "6.1.0-1-cloud-amd64", 1_000_000)
    make_entry(cache, "b", "cloud-amd64", "6.1.0-2-cloud-amd64", 2_000_000)

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    assert stock.stock_kernel().release == "6.1.0-2-cloud-amd64"
    with pytest.raises(DependencyError):
        stock.stock_kernel(offline_ok=False)


def test_offline_with_empty_cache_raises(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 100, "", "E: no lists\n")

    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    with pytest.raises(KernelError, match="E: no lists"):
        stock.stock_kernel()


def test_cache_key_follows_package_checksums() -> None:
    a = [Package("p", "1", "aa" * 32, 1), Package("q", "1", "bb" * 32, 1)]
    b = [Package("p", "2", "aa" * 32, 9), Package("q", "2", "bb" * 32, 9)]
    c = [Package("p", "1", "aa" * 32, 1), Package("q", "1", "cc" * 32, 1)]
    assert stock._key(a) == stock._key(b)  # same bytes, same entry
    assert stock._key(a) != stock._key(c)


# --- headers Makefile -------------------------------------------------------------------------


def test_retarget_headers(tmp_path: Path) -> None:
    makefile = tmp_path / "usr" / "src" / f"linux-headers-{REL}" / "Makefile"
    makefile.parent.mkdir(parents=True)
    makefile.write_text(
        "MAKEFLAGS += --no-print-directory\n"
        "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n"
    )
    stock._retarget_headers(tmp_path, REL)
    text = makefile.read_text()
    assert "/usr/src/" not in text
    assert (
        "include $(dir $(realpath $(firstword $(MAKEFILE_LIST))))"
        "../linux-headers-6.1.0-56-common/Makefile" in text
    )
    assert text.startswith("MAKEFLAGS += --no-print-directory\n")


def test_retarget_headers_unexpected_layout(tmp_path: Path) -> None:
    makefile = tmp_path / "usr" / "src" / f"linux-headers-{REL}" / "Makefile"
    makefile.parent.mkdir(parents=True)
    makefile.write_text("include ../common/Makefile\n")
    with pytest.raises(KernelError, match="unexpected layout"):
        stock._retarget_headers(tmp_path, REL)


# --- the record of what apt named current ---------------------------------------------------


@pytest.fixture
def lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "apt-lists"
    folder.mkdir()
    os.utime(folder, (1_000_000, 1_000_000))
    monkeypatch.setattr(stock, "APT_LISTS", folder)
    return folder


def cached_current(cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A cache entry for the packages the fake apt names, and that fake apt's call log."""
    run, calls = fake_apt()
    monkeypatch.setattr("testbed.kernel.stock.subprocess.run", run)
    packages = stock.resolve()
    make_entry(cache, stock._key(packages), "cloud-amd64", REL, 1_000_000)
    calls.clear()
    return calls


def test_cached_kernel_is_used_without_apt(
    cache: Path, lists: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = cached_current(cache, monkeypatch)
    first = stock.stock_kernel()
    assert first.release == REL
    assert len(calls) == 6  # the first command asks apt: no record yet
    calls.clear()
    assert stock.stock_kernel() == first
    assert calls == []  # later commands do not


def test_changed_apt_lists_ask_apt_again(
    cache: Path, lists: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = cached_current(cache, monkeypatch)
    stock.stock_kernel()
    calls.clear()
    os.utime(lists, (2_000_000, 2_000_000))  # what apt-get update does to the folder
    assert stock.stock_kernel().release == REL
    assert [c[:2] for c in calls].count(["apt-cache", "show"]) == 4
    calls.clear()
    stock.stock_kernel()
    assert calls == []  # and the new state is recorded


def test_update_always_asks_apt(cache: Path, lists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = cached_current(cache, monkeypatch)
    stock.stock_kernel()
    calls.clear()
    assert stock.update().release == REL
    assert len(calls) == 6


def test_record_of_a_removed_entry_is_ignored(
    cache: Path, lists: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = cached_current(cache, monkeypatch)
    stock.stock_kernel()
    for manifest in (cache / "kernels").glob("*/manifest.json"):
        manifest.unlink()  # a user cleaned the cache by hand
    calls.clear()

    def fetch(*args: object) -> None:
        raise KernelError("fetch attempted")

    monkeypatch.setattr(stock, "_fetch", fetch)
    with pytest.raises(KernelError, match="fetch attempted"):
        stock.stock_kernel()
    assert len(calls) == 6  # apt was asked again, then the entry was fetched anew
