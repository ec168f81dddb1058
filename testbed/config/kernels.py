"""Named guest kernels: ``guest-kernel-config/kernels/<name>.yaml`` as frozen dataclasses.

A named kernel says what to build, not how: the source tree, the config fragments merged on
top of a base config, and the patch series applied before building. ``testbed kernel build
NAME`` builds it (:mod:`testbed.kernel.build`); ``--kernel NAME`` boots it. Example::

    name: patched
    description: base plus the RFC p2p_map series
    tree: debian              # the newest /usr/src/linux-source-*.tar.xz; or a path
    base: tinyconfig
    fragments: [base.config]  # relative to guest-kernel-config/
    series: rfc-p2p-vma       # guest-kernel-config/patches/rfc-p2p-vma/series

Data only: resolving the source and reading fragments and patches happen in
:mod:`testbed.kernel`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config.loader import load_dataclass
from testbed.errors import ConfigError, UnknownNameError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
#: names ``--kernel`` gives another meaning
RESERVED = ("stock",)


class BaseConfig(enum.Enum):
    """The ``make`` target that writes the config the fragments go on top of."""

    TINYCONFIG = "tinyconfig"
    DEFCONFIG = "defconfig"


@dataclass(frozen=True)
class KernelSpec:
    """One named guest kernel, from ``guest-kernel-config/kernels/<name>.yaml``."""

    name: str
    fragments: tuple[str, ...]  #: config fragments, relative to ``guest-kernel-config/``
    description: str = ""
    tree: str = "debian"  #: ``debian``, or a tarball / git checkout (relative: to the YAML)
    base: BaseConfig = BaseConfig.TINYCONFIG
    series: str | None = None  #: a folder under ``guest-kernel-config/patches/``
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"kernel name {self.name!r} must be lower-case letters, digits and '-'"
            )
        if self.name in RESERVED:
            raise ValueError(f"kernel name {self.name!r} is reserved (--kernel stock)")
        if not self.fragments:
            raise ValueError("fragments: name at least one config fragment, e.g. base.config")
        if self.series is not None and ("/" in self.series or self.series.startswith(".")):
            raise ValueError(f"series {self.series!r} must be a folder name under patches/")


def load_kernel_spec(path: Path) -> KernelSpec:
    spec = load_dataclass(KernelSpec, path)
    if spec.name != path.stem:
        raise ConfigError(
            f"name {spec.name!r} differs from the file name; rename one of them",
            path=path,
            key="name",
        )
    return spec


def kernel_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def find_kernel_spec(folder: Path, name: str) -> KernelSpec:
    """The spec named ``name`` in ``folder``; an unknown name lists the known ones."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError("kernel", name, ["stock", *kernel_names(folder)], path=folder)
    return load_kernel_spec(path)
