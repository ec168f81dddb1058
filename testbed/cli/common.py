"""Options and set-up shared by the subcommands that boot guests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from testbed import paths
from testbed.config.kernels import kernel_names
from testbed.config.schema import Accel
from testbed.kernel import kernel_under_test
from testbed.kernel.image import Kernel


def add_kernel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernel and accelerator")
    names = "|".join(["stock", *kernel_names(paths.kernel_config_dir() / "kernels")])
    g.add_argument(
        "--kernel",
        metavar="KERNEL",
        help=f"{names}, a bzImage PATH, or a built kernel tree DIR (e.g. '.' in linux/ after "
        "make; its modules are installed into the cache); default: stock, Debian's kernel. A "
        "named kernel not built yet is built first (see 'testbed kernel build')",
    )
    g.add_argument("--modules", metavar="DIR", type=Path, help="lib/modules/<release> of --kernel")
    g.add_argument("--build", metavar="DIR", type=Path, help="kbuild tree of --kernel")
    g.add_argument(
        "--accel",
        choices=[a.value for a in Accel],
        help="auto probes KVM with a bounded boot and falls back to TCG (default: the machine's)",
    )


def add_boot_options(p: argparse.ArgumentParser) -> None:
    """``--boot-timeout``, for every subcommand that boots a machine."""
    from testbed.qemu.machine import BOOT_TIMEOUT

    p.add_argument(
        "--boot-timeout",
        metavar="SECONDS",
        type=positive_seconds,
        help="give up on a boot that has not reached the guest's 'ready' line after this "
        f"long (default: {BOOT_TIMEOUT:g}; a kernel panic ends the boot at once anyway)",
    )


def boot_timeout_from(args: argparse.Namespace) -> float:
    from testbed.qemu.machine import BOOT_TIMEOUT

    return float(args.boot_timeout) if args.boot_timeout is not None else BOOT_TIMEOUT


def positive_seconds(text: str) -> float:
    """An argparse type: a duration in seconds, more than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number, 1 or more (``-j``, ``--repeat``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def kernel_from(args: argparse.Namespace) -> Kernel:
    return kernel_under_test(args.kernel, args.modules, args.build)


def accel_from(args: argparse.Namespace) -> Accel | None:
    return Accel(args.accel) if args.accel else None


def machine_kwargs(args: argparse.Namespace, kernel: Kernel) -> dict[str, Any]:
    """Keyword arguments for :class:`testbed.qemu.machine.Machine` from the options ``boot``
    and ``exec`` share: accelerator, boot timeout, and the P2P payload unless ``--no-p2p``."""
    kwargs: dict[str, Any] = {"accel": accel_from(args), "boot_timeout": boot_timeout_from(args)}
    if not args.no_p2p:
        from testbed.p2p.payload import payload  # builds the drivers: only when they are wanted

        kwargs.update(payload(kernel).machine_kwargs())
    return kwargs
