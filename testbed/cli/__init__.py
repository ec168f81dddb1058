"""The ``testbed`` command: ``boot``, ``doctor``, ``bench``, ``run``, ``kernel``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``; errors from the testbed's tree end the command with their message and
exit code 2 (no traceback unless ``-v``), Ctrl-C with 130 after cleaning up.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from testbed.cli import bench, boot, doctor, kernel, run
from testbed.errors import TestbedError
from testbed.log import setup_cli_logging

log = logging.getLogger("testbed")

COMMANDS = (run, boot, doctor, bench, kernel)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="testbed",
        description="QEMU-backed virtual PCI testbed for device peer-to-peer memory and hot-unplug",
    )
    try:
        version = metadata.version("p2p-testbed")
    except metadata.PackageNotFoundError:
        version = "unknown"
    p.add_argument("--version", action="version", version=f"p2p-testbed {version}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_cli_logging(args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
    except TestbedError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
