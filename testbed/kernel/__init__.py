"""The kernel under test: a stock Debian package (default) or the user's own build."""

from __future__ import annotations

from pathlib import Path

from testbed.kernel.image import Kernel, user_kernel
from testbed.kernel.stock import stock_kernel


def kernel_under_test(
    image: Path | None, modules: Path | None = None, build: Path | None = None
) -> Kernel:
    """The user's ``image`` (with its modules folder and build tree), or, without one,
    Debian's stock kernel, fetched into the cache on first use."""
    if image is None:
        return stock_kernel()
    return user_kernel(image, modules, build)
