"""Where the testbed finds its data: the checkout, or the data folders a wheel carries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from testbed import paths


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def test_a_checkout_reads_the_top_level_folders() -> None:
    assert not paths.PACKAGED_DATA.exists(), "testbed/_data must not exist in a checkout"
    assert paths.data_root() == paths.PROJECT_ROOT
    assert (paths.devices_dir() / "machines" / "default.yaml").is_file()
    assert (paths.suite_dir() / "conftest.py").is_file()


def test_an_installed_package_reads_its_packaged_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "testbed" / "_data"
    (data / "qemu-devices").mkdir(parents=True)
    monkeypatch.setattr(paths, "PACKAGED_DATA", data)
    assert paths.data_root() == data
    assert paths.devices_dir() == data / "qemu-devices"
    assert paths.kernel_config_dir() == data / "guest-kernel-config"
    assert paths.suite_dir() == data / "tests" / "p2p"


def test_the_build_hook_ships_the_folders_paths_expects() -> None:
    """setup.py cannot import the package it builds, so it keeps its own copy of the list."""
    tree = ast.parse((paths.PROJECT_ROOT / "setup.py").read_text())
    shipped = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "DATA_FOLDERS" for t in node.targets)
    )
    assert tuple(shipped) == paths.DATA_FOLDERS
    for folder in paths.DATA_FOLDERS:
        if folder != "guest-kernel-config":  # arrives with the first config fragment
            assert (paths.PROJECT_ROOT / folder).is_dir(), folder
