"""Bad input to ``testbed kernel build``, against the real kernel source: each ends with exit
code 2 and a message naming the file and the fix, and leaves no cache entry behind."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.kernel import build as kbuild

#: drivers/pci/p2pdma.c lines 11-14 in 6.12, with line 12 changed: does not apply
STALE_PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
Subject: [PATCH] written for some other kernel

---
diff --git a/drivers/pci/p2pdma.c b/drivers/pci/p2pdma.c
--- a/drivers/pci/p2pdma.c
+++ b/drivers/pci/p2pdma.c
@@ -11,4 +11,5 @@
 #define pr_fmt(fmt) "pci-p2pdma: " fmt
 #include <linux/kernel.h>
+#include <linux/testbed-never.h>
 #include <linux/dma-map-ops.h>
 #include <linux/pci-p2pdma.h>
"""

#: applies to 6.12, and does not compile
BROKEN_PATCH = """\
Subject: [PATCH] does not compile

diff --git a/drivers/pci/p2pdma.c b/drivers/pci/p2pdma.c
--- a/drivers/pci/p2pdma.c
+++ b/drivers/pci/p2pdma.c
@@ -11,4 +11,5 @@
 #define pr_fmt(fmt) "pci-p2pdma: " fmt
 #include <linux/ctype.h>
+static int testbed_broken = undeclared_on_purpose;
 #include <linux/dma-map-ops.h>
 #include <linux/pci-p2pdma.h>
"""


def kernel(config_dir: Path, name: str, body: str) -> None:
    (config_dir / "kernels" / f"{name}.yaml").write_text(f"name: {name}\n" + textwrap.dedent(body))


def series(config_dir: Path, name: str, patches: dict[str, str], listed: list[str]) -> Path:
    folder = config_dir / "patches" / name
    folder.mkdir(parents=True)
    for file, text in patches.items():
        (folder / file).write_text(text)
    (folder / "series").write_text("# test series\n" + "\n".join(listed) + "\n")
    return folder


def entries() -> set[str]:
    folder = kbuild.kbuild_cache() / "kernels"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def build_fails(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    before = entries()
    assert main(["kernel", "build", name]) == 2
    err = capsys.readouterr().err
    assert entries() == before, "a failed build left a cache entry (or a temp folder)"
    return err


def test_series_naming_a_missing_patch(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = series(
        config_dir, "gone", {"0001-a.patch": STALE_PATCH}, ["0001-a.patch", "0002-gone.patch"]
    )
    kernel(config_dir, "k", "fragments: [base.config]\nseries: gone\n")
    err = build_fails("k", capsys)
    assert f"{folder / 'series'}:3: names patch '0002-gone.patch'" in err
    assert "add the file or drop the line" in err


def test_source_that_is_not_a_kernel_tree(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notlinux").mkdir()
    (tmp_path / "notlinux" / "Makefile").write_text("all:\n")
    kernel(config_dir, "k", f"tree: {tmp_path / 'notlinux'}\nfragments: [base.config]\n")
    err = build_fails("k", capsys)
    assert f"{tmp_path / 'notlinux'} is not a kernel source tree (missing Kconfig" in err


def test_patch_that_does_not_apply_to_the_real_source(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = series(config_dir, "stale", {"0001-stale.patch": STALE_PATCH}, ["0001-stale.patch"])
    kernel(config_dir, "k", "fragments: [base.config]\nseries: stale\n")
    err = build_fails("k", capsys)
    assert f"{folder / '0001-stale.patch'}: does not apply (patch 0001-stale.patch, line 2" in err
    assert "drivers/pci/p2pdma.c: hunk #1 failed at line 11" in err
    assert "rebase the patch" in err


def test_fragment_naming_an_option_that_does_not_exist(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frag = config_dir / "typo.config"
    frag.write_text("# a typo\nCONFIG_PCI_P2PDAM=y\n")
    kernel(config_dir, "k", "fragments: [base.config, typo.config]\n")
    err = build_fails("k", capsys)
    assert (
        f"{frag}:2: requested CONFIG_PCI_P2PDAM=y, got: not set (CONFIG_PCI_P2PDAM does not "
        "exist in this kernel's Kconfig" in err
    )


def test_compiler_failure_names_file_and_line(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same fragments as ``base``: reuses its work tree, so only p2pdma.c is compiled."""
    series(config_dir, "broken", {"0001-broken.patch": BROKEN_PATCH}, ["0001-broken.patch"])
    kernel(config_dir, "k", "fragments: [base.config]\nseries: broken\n")
    err = build_fails("k", capsys)
    assert "make bzImage modules failed" in err
    assert "drivers/pci/p2pdma.c:13:" in err and "undeclared_on_purpose" in err
    assert "full log:" in err
