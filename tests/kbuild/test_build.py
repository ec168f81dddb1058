"""``testbed kernel build base`` for real: the cache entry holds everything the rest of the
testbed needs, an unchanged request costs no build, and the entry's kbuild tree builds the
P2P guest drivers. Cold (nothing cached) this builds a kernel: ~4-6 min on 2 cores."""

from __future__ import annotations

import json
import time
from pathlib import Path

from testbed import paths
from testbed.cli.kernel import with_bench_patch
from testbed.config.kernels import find_kernel_spec
from testbed.kernel import build as kbuild
from testbed.kernel import kconfig
from testbed.kernel.image import bzimage_release
from testbed.p2p.payload import payload


def test_base_builds_and_is_then_cached() -> None:
    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", "base")
    kernel = kbuild.build(kbuild.request_for(spec))
    entry = kernel.image.parent

    assert bzimage_release(kernel.image) == kernel.release
    assert kernel.modules is not None and (kernel.modules / "modules.dep").is_file()
    assert (kernel.modules / "build" / "Makefile").is_file()  # the symlink to the kbuild tree
    assert kernel.build is not None and (kernel.build / "Module.symvers").is_file()
    config = kconfig.parse_dotconfig((entry / "config").read_text())
    for option in ("CONFIG_PCI_P2PDMA", "CONFIG_ZONE_DEVICE", "CONFIG_MMU_NOTIFIER"):
        assert config.get(option) == "y", option
    assert kernel.config_path() == kernel.build / ".config"
    assert (entry / "patches.txt").read_text() == ""  # base has no series
    assert "olddefconfig" in (entry / "build.log").read_text()  # the whole log is kept
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["release"] == kernel.release and manifest["series"] is None

    t0 = time.monotonic()
    again = kbuild.build(kbuild.request_for(spec))
    assert time.monotonic() - t0 < 2.0, "an unchanged request must cost no build"
    assert again == kernel


def test_the_kbuild_tree_builds_the_p2p_drivers() -> None:
    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", "base")
    kernel = kbuild.build(kbuild.request_for(spec))
    built = payload(kernel).build
    assert {m.name for m in built.modules} == {"p2p_exporter.ko", "p2p_importer.ko"}


def test_a_changed_patch_rebuilds_only_what_it_touches(tmp_path: Path) -> None:
    """base + a one-line patch, then the same patch changed: the second build recompiles
    drivers/pci/p2pdma.c in the same O= tree, not the kernel (ccache aside)."""
    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", "base")
    base = kbuild.request_for(spec)
    first = kbuild.build(with_bench_patch(base, tmp_path, "first"))
    second = kbuild.build(with_bench_patch(base, tmp_path, "second"))
    assert first.image != second.image and first.release == second.release
    log = (second.image.parent / "build.log").read_text()
    compiled = [line.split()[-1] for line in log.splitlines() if line.startswith("  CC ")]
    assert any(c.endswith("drivers/pci/p2pdma.o") for c in compiled), compiled
    assert len(compiled) < 30, f"an incremental build compiled {len(compiled)} files"
    patches = (second.image.parent / "patches.txt").read_text()
    assert patches.startswith("9999-testbed-bench.patch sha256:")
