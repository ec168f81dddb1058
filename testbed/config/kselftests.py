"""Kselftest programs the guest can run: ``guest-kernel-config/kselftests/<dir>/<prog>.yaml``.

A kselftest is a program from the kernel's own ``tools/testing/selftests/`` that prints TAP;
the testbed builds it static from the source of the kernel under test and runs it in the
guest (:mod:`testbed.kselftest`). Its file says what it needs from that kernel::

    name: mm/hmm-tests                              # <dir>/<prog>: --kselftest mm/hmm-tests
    file: tools/testing/selftests/mm/hmm-tests.c    # in the kernel's source tree
    libraries: [rt, pthread, m]                     # -l... for the static link
    config: [CONFIG_TEST_HMM]                       # must be =y or =m in the kernel
    fragment: hmm.config                            # the fragment that brings them (for errors)
    modules: [test_hmm]                             # insmod'ed at boot (with what they need)
    kernel_args: [hugepages=16]                     # on the guest's command line
    timeout: 900                                    # seconds the program may run

Data only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config.loader import FieldError, load_dataclass
from testbed.errors import ConfigError, UnknownNameError

_NAME = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_.-]+$")
_OPTION = re.compile(r"^CONFIG_[A-Z0-9_]+$")
_KERNEL_ARG = re.compile(r"^[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:-]*)?$")


@dataclass(frozen=True)
class KselftestSpec:
    """One kselftest program and what it needs from the kernel and the guest."""

    name: str  #: ``<dir>/<prog>`` under ``tools/testing/selftests/``
    file: str  #: the ``.c`` file, relative to the kernel source tree
    fragment: str  #: the config fragment providing :attr:`config` (named in errors)
    config: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    kernel_args: tuple[str, ...] = ()
    timeout: float = 600.0
    source: str = field(default="", compare=False, repr=False)  #: ``file:line`` (the loader's)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise FieldError(
                f"name {self.name!r} must be <dir>/<program>, e.g. mm/hmm-tests", "name"
            )
        if not self.file.startswith("tools/testing/selftests/") or not self.file.endswith(".c"):
            raise FieldError(f"{self.file!r} must be a tools/testing/selftests/ .c file", "file")
        for i, option in enumerate(self.config):
            if not _OPTION.match(option):
                raise FieldError(f"{option!r} is not a CONFIG_ option name", "config", i)
        for i, arg in enumerate(self.kernel_args):
            if not _KERNEL_ARG.match(arg):
                raise FieldError(f"{arg!r} is not a plain name=value argument", "kernel_args", i)
        for i, lib in enumerate(self.libraries):
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_+-]*", lib):
                raise FieldError(f"{lib!r} is not a library name (as in -l<name>)", "libraries", i)
        if not self.timeout > 0:
            raise FieldError(f"timeout must be positive, got {self.timeout}", "timeout")

    @property
    def program(self) -> str:
        """``hmm-tests``: the program's name, the prefix of its results' names."""
        return self.name.rsplit("/", 1)[1]


def kselftests_dir(config_dir: Path) -> Path:
    return config_dir / "kselftests"


def kselftest_names(config_dir: Path) -> list[str]:
    folder = kselftests_dir(config_dir)
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.glob("*/*.yaml"))


def load_kselftest(path: Path) -> KselftestSpec:
    spec = load_dataclass(KselftestSpec, path)
    expected = f"{path.parent.name}/{path.stem}"
    if spec.name != expected:
        raise ConfigError(
            f"name {spec.name!r} differs from the file's place {expected!r}; rename one",
            path=path,
            key="name",
        )
    return spec


def spec_path(config_dir: Path, name: str) -> Path:
    """Where the kselftest ``name`` is described (an unknown name lists the known ones)."""
    path = kselftests_dir(config_dir) / f"{name}.yaml"
    if not _NAME.match(name) or not path.is_file():
        raise UnknownNameError("kselftest", name, kselftest_names(config_dir), path=path.parent)
    return path
