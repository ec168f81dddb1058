"""Logging set-up shared by the command line and the pytest plugin.

Library code logs through ``logging.getLogger(__name__)``; notices a user must see (a
fallback to TCG, a cache being filled, a kernel being built) are logged at WARNING or INFO.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("testbed")


def setup_cli_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("testbed: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
