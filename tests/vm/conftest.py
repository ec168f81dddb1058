"""Tests that boot real QEMU guests. Everything here is marked ``vm``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/vm/" in str(item.path):
            item.add_marker(pytest.mark.vm)
