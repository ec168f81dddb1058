"""The ``testbed`` command: ``run``, ``exec``, ``boot``, ``kernel``, ``doctor``, ``bench``,
``mutants``, ``campaign``, ``repro``, ``cache``, ``regress``, ``bisect``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``; errors from the testbed's tree end the command with their message and
exit code 2 (no traceback unless ``-v``), Ctrl-C with 130 after cleaning up. Command modules
import what they need to act inside ``main``, so that a command pays only for its own imports
(``testbed exec`` is timed from process start; see ``testbed bench``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from testbed.cli import (
    bench,
    bisect,
    boot,
    cache,
    campaign,
    doctor,
    execute,
    kernel,
    mutants,
    regress,
    repro,
    run,
)
from testbed.errors import TestbedError
from testbed.log import setup_cli_logging

log = logging.getLogger("testbed")

COMMANDS = (
    run,
    execute,
    boot,
    kernel,
    doctor,
    bench,
    mutants,
    campaign,
    repro,
    cache,
    regress,
    bisect,
)


class _Version(argparse.Action):
    """``--version``, reading the installed distribution's metadata only when asked (the
    import costs ~50 ms on every command otherwise)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("p2p-testbed")
        except metadata.PackageNotFoundError:
            version = "unknown"
        print(f"p2p-testbed {version}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="testbed",
        description="QEMU-backed virtual PCI testbed for device peer-to-peer memory and hot-unplug",
    )
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
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
