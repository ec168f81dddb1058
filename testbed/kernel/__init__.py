"""The kernel under test: a stock Debian package (default), the user's own bzImage, or a
built kernel tree."""

from __future__ import annotations

from pathlib import Path

from testbed.kernel.image import Kernel, user_kernel
from testbed.kernel.stock import stock_kernel


def kernel_under_test(
    image: Path | None, modules: Path | None = None, build: Path | None = None
) -> Kernel:
    """The user's ``image`` (with its modules folder and build tree), or the kernel built in
    the tree ``image`` names, or, without one, Debian's stock kernel, fetched into the cache on
    first use."""
    if image is None:
        return stock_kernel()
    if image.is_dir():
        from testbed.kernel.tree import tree_kernel

        return tree_kernel(image, modules, build)
    return user_kernel(image, modules, build)
