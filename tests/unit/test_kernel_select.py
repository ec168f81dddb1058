"""--kernel stock|NAME|PATH (testbed.kernel.kernel_under_test) and the ``kernel`` command's
options. Nothing is fetched or built: the stock and build paths are replaced by recorders."""

from __future__ import annotations

from pathlib import Path

import pytest

import testbed.kernel as kernel_mod
from testbed.cli import kernel as kernel_cli
from testbed.cli import parser
from testbed.config.kernels import KernelSpec
from testbed.errors import ConfigError, UnknownNameError
from testbed.kernel import build as kbuild
from testbed.kernel.image import Kernel

FAKE = Kernel("6.12.0", Path("/k/bzImage"), None, None, "fake")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stock", False),
        ("patched", False),
        ("./bzImage", True),
        ("/k/bzImage", True),
        ("a.img", True),
    ],
)
def test_is_path(text: str, expected: bool) -> None:
    assert kernel_mod.is_path(text) is expected


def test_stock_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_mod, "stock_kernel", lambda: FAKE)
    assert kernel_mod.kernel_under_test(None) is FAKE
    assert kernel_mod.kernel_under_test("stock") is FAKE


def test_a_name_builds_that_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def request_for(spec: KernelSpec) -> KernelSpec:
        seen.append(spec.name)
        return spec

    monkeypatch.setattr(kbuild, "request_for", request_for)
    monkeypatch.setattr(kbuild, "build", lambda request: FAKE)
    assert kernel_mod.kernel_under_test("base") is FAKE
    assert seen == ["base"]


def test_unknown_name_and_stray_options() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown kernel 'nope'; known: .*base, .*stock"):
        kernel_mod.kernel_under_test("nope")
    with pytest.raises(ConfigError, match="--modules and --build go with a bzImage path"):
        kernel_mod.kernel_under_test("base", Path("/m"))


def test_kernel_command_options() -> None:
    args = parser().parse_args(["kernel", "build"])
    assert args.func is kernel_cli.main_build and args.names == [] and args.jobs is None
    args = parser().parse_args(["kernel", "build", "base", "patched", "-j", "3", "--json"])
    assert (args.names, args.jobs, args.json) == (["base", "patched"], 3, True)
    args = parser().parse_args(["kernel", "bench", "--warm", "--json"])
    assert args.func is kernel_cli.main_bench and args.name == "base" and args.warm


def test_bench_patch_is_a_valid_one_line_change() -> None:
    from testbed.kernel.series import touched_files

    text = kernel_cli.bench_patch("x").decode()
    assert touched_files(text) == ("drivers/pci/p2pdma.c",)
    assert (
        sum(1 for line in text.splitlines() if line.startswith("+") and not line.startswith("+++"))
        == 1
    )
