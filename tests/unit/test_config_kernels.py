"""Named kernels (testbed.config.kernels): strict YAML into KernelSpec, and the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config.kernels import BaseConfig, find_kernel_spec, kernel_names, load_kernel_spec
from testbed.errors import ConfigError, UnknownNameError
from testbed.paths import PROJECT_ROOT

KERNELS = PROJECT_ROOT / "guest-kernel-config" / "kernels"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_kernels_load() -> None:
    assert {"base", "patched"} <= set(kernel_names(KERNELS))
    base = find_kernel_spec(KERNELS, "base")
    assert (base.tree, base.base, base.fragments, base.series) == (
        "debian",
        BaseConfig.TINYCONFIG,
        ("base.config",),
        None,
    )
    patched = find_kernel_spec(KERNELS, "patched")
    assert patched.fragments == base.fragments and patched.series == "rfc-p2p-vma"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown kernel 'pached'; known: .*base, .*stock"):
        find_kernel_spec(KERNELS, "pached")


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("k", "name: k\nfragments: [base.config]\nseries: [a]\n", 3, "expected a string"),
        ("k", "name: k\nfragments: []\n", 1, "name at least one config fragment"),
        ("k", "name: k\nfragments: [a]\nbase: allnoconfig\n", 3, "'tinyconfig', 'defconfig'"),
        ("k", "name: k\nfragment: [a]\n", 2, "unknown key"),
        ("k", "name: other\nfragments: [a]\n", None, "differs from the file name"),
        ("stock", "name: stock\nfragments: [a]\n", 1, "reserved"),
        ("k", "name: k\nfragments: [a]\nseries: ../x\n", 1, "folder name under patches/"),
    ],
)
def test_bad_kernel_files(
    tmp_path: Path, name: str, text: str, line: int | None, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        load_kernel_spec(write(tmp_path, name, text))
    assert info.value.path == tmp_path / f"{name}.yaml"
    if line is not None:
        assert info.value.line == line
