"""``testbed kernel ACTION``: manage the kernels the testbed boots.

``update`` asks apt which Debian stock kernel is current, fetches it into the cache if it is
new, and records it, so that later commands use it without asking apt (see
:mod:`testbed.kernel.stock`). Other actions add a function and a sub-parser below.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "kernel",
        help="manage kernels: 'update' looks up and fetches the current stock kernel",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    actions = p.add_subparsers(dest="action", required=True)
    update = actions.add_parser(
        "update",
        help="ask apt for the current Debian stock kernel, fetch it if new, remember it",
    )
    update.add_argument(
        "--flavour",
        default=None,
        help="Debian kernel flavour (default: cloud-amd64; also amd64, rt-amd64)",
    )
    update.set_defaults(func=update_main)


def update_main(args: argparse.Namespace) -> int:
    from testbed.kernel import stock

    flavour = args.flavour or stock.DEFAULT_FLAVOUR
    before = {k.image for k in stock.cached(flavour)}
    kernel = stock.update(flavour)
    state = "already cached" if kernel.image in before else "fetched"
    print(f"current stock kernel ({flavour}): {kernel.describe()}; {state}")
    print(f"  image: {kernel.image}")
    return 0
