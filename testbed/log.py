"""Logging set-up shared by the command line and the pytest plugin.

Library code logs through ``logging.getLogger(__name__)``; notices a user must see (a
fallback to TCG, a cache being filled, a kernel being built) are logged at WARNING or INFO.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("testbed")


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The command line's stderr handler (a class of its own, so it is installed once)."""

    def emit(self, record: logging.LogRecord) -> None:
        # whatever sys.stderr is now: main() may run many times in one process (tests), each
        # time under a different capture, and the stream of the first would be closed
        self.stream = sys.stderr
        super().emit(record)


def setup_cli_logging(verbose: bool = False) -> None:
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    if any(isinstance(h, _CliHandler) for h in LOGGER.handlers):
        return  # already set up: main() runs more than once in one process under tests
    handler = _CliHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("testbed: %(message)s"))
    LOGGER.addHandler(handler)
