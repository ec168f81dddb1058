"""Build hook: carry the project's data folders inside the wheel.

The repository keeps device definitions (``qemu-devices/``), kernel config fragments
(``guest-kernel-config/``) and the reference suite (``tests/p2p/``) at its top level, where
the design puts them. A wheel holds only packages, so ``build_py`` copies those folders into
``testbed/_data/`` of the built package, where :mod:`testbed.paths` looks for them when the
testbed is installed. Everything else is in ``pyproject.toml``; an editable install
(``pip install -e``) copies nothing and reads the folders from the checkout.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: The folders a wheel carries (keep in step with testbed.paths.DATA_FOLDERS).
DATA_FOLDERS = ("qemu-devices", "guest-kernel-config", "scenarios", "tests/p2p")
#: Build products and caches that may lie in a developer's checkout; never shipped.
SKIP = ("__pycache__", "*.pyc", "*.o", "*.ko", "*.mod", "*.mod.c", "*.cmd", ".*",
        "modules.order", "Module.symvers")  # fmt: skip


class BuildWithData(build_py):  # type: ignore[misc]
    """``build_py`` that also copies :data:`DATA_FOLDERS` to ``testbed/_data/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest_root = Path(self.build_lib) / "testbed" / "_data"
        for folder in DATA_FOLDERS:
            src = HERE / folder
            if not src.is_dir():
                continue  # e.g. guest-kernel-config/ before the first fragment exists
            dest = dest_root / folder
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=_ignore)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        dest_root = Path(self.build_lib) / "testbed" / "_data"
        outputs += [str(p) for p in dest_root.rglob("*") if p.is_file()]
        return outputs


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in SKIP)}


os.chdir(HERE)
setup(cmdclass={"build_py": BuildWithData})
