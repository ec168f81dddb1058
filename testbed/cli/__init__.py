"""The ``testbed`` command: ``run``, ``exec``, ``boot``, ``kernel``, ``doctor``, ``bench``,
``mutants``, ``campaign``, ``repro``, ``cache``, ``regress``, ``bisect``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``, imported only when that command runs (or for ``testbed --help``);
errors from the testbed's tree end the command with their message and
exit code 2 (no traceback unless ``-v``), Ctrl-C with 130 after cleaning up. Command modules
import what they need to act inside ``main``, so that a command pays only for its own imports
(``testbed exec`` is timed from process start; see ``testbed bench``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from testbed.errors import TestbedError
from testbed.log import setup_cli_logging

log = logging.getLogger("testbed")

#: command name -> its module in this package, in the order ``testbed --help`` lists them
COMMANDS = {
    "run": "run",
    "exec": "execute",
    "boot": "boot",
    "kernel": "kernel",
    "doctor": "doctor",
    "bench": "bench",
    "mutants": "mutants",
    "campaign": "campaign",
    "repro": "repro",
    "cache": "cache",
    "regress": "regress",
    "bisect": "bisect",
}


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


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that command's options (its module alone is
    imported: ``testbed exec`` is timed from process start, and importing every command's
    module costs it ~0.1 s)."""
    p = argparse.ArgumentParser(
        prog="testbed",
        description="QEMU-backed virtual PCI testbed for device peer-to-peer memory and hot-unplug",
    )
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"testbed.cli.{module}").add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # the command is the first word that is not an option (the global ones take no value)
    command = next((w for w in words if not w.startswith("-")), None)
    args = parser(command if command in COMMANDS else None).parse_args(words)
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


def console_main() -> None:
    """The ``testbed`` console script: :func:`main`, then the exit handlers, then the process
    ends without tearing the interpreter down.

    By then everything the command started is stopped and removed (the exit handlers include
    the reaper's: its pipe is closed and it is waited for); the teardown would only free
    memory, module by module, which costs every ``testbed exec`` 30-60 ms of what its user
    waits for."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (``... | head``)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
