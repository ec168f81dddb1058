"""Options and set-up shared by the subcommands that boot guests."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        help=f"{names} or a bzImage PATH (default: stock, Debian's kernel); a named kernel "
        "not built yet is built first (see 'testbed kernel build')",
    )
    g.add_argument("--modules", metavar="DIR", type=Path, help="lib/modules/<release> of --kernel")
    g.add_argument("--build", metavar="DIR", type=Path, help="kbuild tree of --kernel")
    g.add_argument(
        "--accel",
        choices=[a.value for a in Accel],
        help="auto probes KVM with a bounded boot and falls back to TCG (default: the machine's)",
    )


def kernel_from(args: argparse.Namespace) -> Kernel:
    return kernel_under_test(args.kernel, args.modules, args.build)


def accel_from(args: argparse.Namespace) -> Accel | None:
    return Accel(args.accel) if args.accel else None
