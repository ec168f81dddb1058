"""A built kernel tree as the kernel under test (testbed.kernel.tree), on a fake tree.

The fake tree has what a real one has after ``make``: a bzImage with a setup header, the
release file, ``.config``, ``modules.order`` and the modules, and a Makefile whose
``modules_install`` target installs them like kbuild does (and counts its runs). Real ``make``
runs it; caches go to a temporary ``XDG_CACHE_HOME``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_kernel_image import bzimage

from testbed.errors import KernelError
from testbed.kernel import kernel_under_test
from testbed.kernel.tree import module_files, tree_kernel

RELEASE = "6.12.0-testbed+"
MAKEFILE = f"""\
modules_install:
\techo run >> installs.log
\tmkdir -p $(INSTALL_MOD_PATH)/lib/modules/{RELEASE}/kernel/drivers
\tcp drivers/net/virtio_net.ko $(INSTALL_MOD_PATH)/lib/modules/{RELEASE}/kernel/drivers/
\techo 'kernel/drivers/virtio_net.ko:' > $(INSTALL_MOD_PATH)/lib/modules/{RELEASE}/modules.dep
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "p2p-testbed"


def fake_tree(root: Path, *, modules: bool = True, release: str = RELEASE) -> Path:
    tree = root / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(bzimage(f"{release} (dev@host) #1".encode()))
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text(release + "\n")
    (tree / ".config").write_text("CONFIG_X86=y\n" + ("CONFIG_MODULES=y\n" if modules else ""))
    (tree / "Makefile").write_text(MAKEFILE)
    if modules:
        (tree / "drivers/net").mkdir(parents=True)
        (tree / "drivers/net/virtio_net.ko").write_bytes(b"\x7fELF module v1")
        (tree / "modules.order").write_text("drivers/net/virtio_net.o\n")
    return tree


def installs(tree: Path) -> int:
    log = tree / "installs.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_a_tree_is_a_kernel_with_staged_modules(tmp_path: Path, cache: Path) -> None:
    tree = fake_tree(tmp_path)
    kernel = kernel_under_test(tree)
    assert kernel.release == RELEASE
    assert kernel.image == tree / "arch/x86/boot/bzImage"
    assert kernel.build == tree
    assert kernel.modules is not None
    assert kernel.modules.is_relative_to(cache / "kernels" / "tree-modules")
    assert kernel.modules.name == RELEASE
    assert (kernel.modules / "kernel/drivers/virtio_net.ko").read_bytes() == b"\x7fELF module v1"
    assert installs(tree) == 1
    assert kernel_under_test(tree) == kernel
    assert installs(tree) == 1, "an unchanged tree reuses its staged modules"


def test_a_rebuilt_module_is_staged_anew(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    first = tree_kernel(tree)
    (tree / "drivers/net/virtio_net.ko").write_bytes(b"\x7fELF module v2")
    second = tree_kernel(tree)
    assert installs(tree) == 2
    assert first.modules != second.modules
    assert second.modules is not None
    assert (second.modules / "kernel/drivers/virtio_net.ko").read_bytes() == b"\x7fELF module v2"


def test_relative_path_dot_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_tree(tmp_path)
    monkeypatch.chdir(tree)
    assert kernel_under_test(Path(".")).image == tree / "arch/x86/boot/bzImage"


def test_a_tree_without_modules_has_none(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, modules=False)
    kernel = tree_kernel(tree)
    assert kernel.modules is None
    assert installs(tree) == 0


def test_an_unbuilt_tree_says_run_make(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    (tree / "arch/x86/boot/bzImage").unlink()
    with pytest.raises(KernelError, match=r"no arch/x86/boot/bzImage; build the kernel first"):
        tree_kernel(tree)


def test_a_reconfigured_tree_is_refused(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    (tree / "include/config/kernel.release").write_text("6.13.0-rc1\n")
    with pytest.raises(KernelError, match=r"configured as '6\.13\.0-rc1'; run 'make'"):
        tree_kernel(tree)


def test_a_missing_module_is_named(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    (tree / "drivers/net/virtio_net.ko").unlink()
    with pytest.raises(KernelError, match=r"lists drivers/net/virtio_net\.ko, which is missing"):
        tree_kernel(tree)


def test_failing_modules_install_carries_make_output(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    (tree / "Makefile").write_text("modules_install:\n\t@echo 'no space left' >&2; false\n")
    with pytest.raises(KernelError, match="no space left"):
        tree_kernel(tree)


def test_module_files_accepts_o_and_ko_entries(tmp_path: Path) -> None:
    (tmp_path / "modules.order").write_text("a/b.o\nc/d.ko\n")
    assert module_files(tmp_path) == ["a/b.ko", "c/d.ko"]
