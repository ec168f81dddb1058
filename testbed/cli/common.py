"""Options and set-up shared by the subcommands that boot guests."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.config.schema import Accel
from testbed.kernel import kernel_under_test
from testbed.kernel.image import Kernel


def add_kernel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernel and accelerator")
    g.add_argument(
        "--kernel",
        metavar="BZIMAGE|DIR",
        type=Path,
        help="kernel image, or a built kernel tree (e.g. '.' in linux/ after make; its modules "
        "are installed into the cache); default: Debian's stock kernel",
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
