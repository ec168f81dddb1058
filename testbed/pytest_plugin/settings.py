"""Command-line options of the plugin, parsed once into a frozen :class:`Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.config.schema import Accel
from testbed.kernel import kernel_under_test
from testbed.kernel.image import Kernel
from testbed.pytest_plugin.parallel import Shard, parse_shard
from testbed.qemu.machine import BOOT_TIMEOUT


@dataclass(frozen=True)
class Settings:
    kernel_image: str | None  #: stock, a kernel name or a bzImage path; None: stock
    kernel_modules: Path | None
    kernel_build: Path | None
    accel: Accel | None  #: None: what each machine's YAML says (``auto`` by default)
    artifacts: Path
    keep_artifacts: bool
    boot_timeout: float = BOOT_TIMEOUT  #: seconds a machine may take to boot
    p2p_src: Path | None = None  #: None: the checkout's qemu-devices/p2p/ (see build_p2p_modules)
    machine: str = "default"  #: the machine the reference suite runs on (qemu-devices/machines)
    shard: Shard | None = None  #: None: every collected test
    snapshot: bool = True  #: fresh default P2P guests resume a saved one instead of booting

    def kernel(self) -> Kernel:
        return kernel_under_test(self.kernel_image, self.kernel_modules, self.kernel_build)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("testbed", "p2p-testbed guests")
    group.addoption(
        "--testbed-kernel",
        metavar="KERNEL",
        help="kernel under test: stock (Debian's cloud-amd64 kernel, fetched and cached; the "
        "default), a name from guest-kernel-config/kernels/ (built on first use), a bzImage, or "
        "a built kernel tree",
    )
    group.addoption(
        "--testbed-modules",
        metavar="DIR",
        type=Path,
        help="lib/modules/<release> of --testbed-kernel (with modules.dep)",
    )
    group.addoption(
        "--testbed-build",
        metavar="DIR",
        type=Path,
        help="kbuild tree of --testbed-kernel, to build the guest modules against",
    )
    group.addoption(
        "--testbed-accel",
        choices=[a.value for a in Accel],
        help="auto: probe KVM with a bounded boot, fall back to TCG; kvm/tcg: force",
    )
    group.addoption(
        "--testbed-boot-timeout",
        metavar="SECONDS",
        type=float,
        default=BOOT_TIMEOUT,
        help="seconds a guest may take to boot (default: %(default)g; a panic ends it at once)",
    )
    group.addoption(
        "--testbed-machine",
        metavar="NAME",
        default="default",
        help="machine the reference suite runs on, e.g. 'switch' (default: %(default)s)",
    )
    group.addoption(
        "--testbed-artifacts",
        metavar="DIR",
        type=Path,
        default=Path("testbed-artifacts"),
        help="one folder per test: console, QMP log, dmesg, command line (default: %(default)s)",
    )
    group.addoption(
        "--testbed-keep-artifacts",
        action="store_true",
        help="keep the artifact folders of passing tests too",
    )
    group.addoption(
        "--testbed-no-snapshot",
        action="store_false",
        dest="testbed_snapshot",
        default=True,
        help="boot every fresh default P2P guest (fresh_p2p_vm()) instead of resuming the "
        "default machine saved once per session (the default; several times faster to SSH)",
    )
    group.addoption(
        "--testbed-snapshot",
        action="store_true",
        dest="testbed_snapshot",
        default=True,
        help="resume fresh default P2P guests from a saved one (the default; kept for old "
        "command lines)",
    )
    group.addoption(
        "--testbed-shard",
        metavar="I/N",
        help="run only the I-th of N deterministic parts of the selected tests (CI shards; "
        "give every shard the same other arguments). A module's shared-guest tests stay in one",
    )
    group.addoption(
        "--testbed-p2p-src",
        metavar="DIR",
        type=Path,
        help="build the P2P guest drivers from DIR instead of qemu-devices/p2p/ "
        "(testbed mutants points it at a patched copy)",
    )


_SETTINGS = pytest.StashKey[Settings]()


def from_config(config: pytest.Config) -> Settings:
    """This run's settings, parsed from the options on first use (hooks ask once per test)."""
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        settings = config.stash[_SETTINGS] = _parse(config)
    return settings


def _parse(config: pytest.Config) -> Settings:
    accel = config.getoption("--testbed-accel")
    return Settings(
        kernel_image=config.getoption("--testbed-kernel"),
        kernel_modules=config.getoption("--testbed-modules"),
        kernel_build=config.getoption("--testbed-build"),
        accel=Accel(accel) if accel else None,
        artifacts=Path(config.getoption("--testbed-artifacts")).absolute(),
        keep_artifacts=bool(config.getoption("--testbed-keep-artifacts")),
        boot_timeout=_positive(config.getoption("--testbed-boot-timeout")),
        p2p_src=config.getoption("--testbed-p2p-src"),
        machine=str(config.getoption("--testbed-machine")),
        shard=_shard(config.getoption("--testbed-shard")),
        snapshot=bool(config.getoption("testbed_snapshot")),
    )


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--testbed-shard: {exc}") from None


def _positive(seconds: float) -> float:
    if not seconds > 0:
        raise pytest.UsageError(f"--testbed-boot-timeout must be positive, got {seconds:g}")
    return float(seconds)
