"""The kernel under test: Debian's stock one, a named kernel the testbed builds, or a bzImage.

``--kernel`` (and the pytest plugin's ``--testbed-kernel``) takes one of

- ``stock`` (the default): Debian's stock cloud kernel, fetched into the cache on first use;
- a name from ``guest-kernel-config/kernels/`` (``base``, ``patched``, ...): built by
  :mod:`testbed.kernel.build` on first use (with progress lines; later uses hit the cache);
- a built kernel tree (a directory: ``.`` in ``linux/`` after ``make``), see
  :mod:`testbed.kernel.tree`;
- a path to a bzImage (with ``--modules``/``--build`` for its modules and kbuild tree).
"""

from __future__ import annotations

from pathlib import Path

from testbed.errors import ConfigError
from testbed.kernel.image import Kernel, user_kernel
from testbed.kernel.stock import stock_kernel

STOCK = "stock"


def is_path(selection: str) -> bool:
    """Whether ``--kernel`` names a file rather than a kernel name."""
    return "/" in selection or "." in selection or Path(selection).is_file()


def kernel_under_test(
    selection: str | Path | None, modules: Path | None = None, build: Path | None = None
) -> Kernel:
    """The kernel ``selection`` names (see the module doc); None means ``stock``."""
    text = str(selection) if selection is not None else STOCK
    if Path(text).is_dir():
        from testbed.kernel.tree import tree_kernel

        return tree_kernel(Path(text), modules, build)
    if is_path(text):
        return user_kernel(Path(text), modules, build)
    if modules is not None or build is not None:
        raise ConfigError(
            f"--modules and --build go with a bzImage path, not with --kernel {text}; "
            "drop them (a named or the stock kernel brings its own)"
        )
    if text == STOCK:
        return stock_kernel()
    from testbed import paths
    from testbed.config.kernels import find_kernel_spec
    from testbed.kernel import build as kbuild

    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", text)
    return kbuild.build(kbuild.request_for(spec))
