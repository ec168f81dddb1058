"""Parallel workers and CI shards: which tests run where.

``--testbed-shard i/N`` keeps the i-th of N deterministic parts of the collected tests (after
``-k``/``-m``), so N CI jobs given the same arguments run every test exactly once between them.
Tests are dealt round robin over their sorted *group keys*: a test that uses the module's
shared P2P guest (``p2p_vm``) has its module as key, so a module's shared-guest tests stay
together and its guest boots in one shard only; every other test is its own group.

Under pytest-xdist (``testbed run -j N`` is ``-n N --dist loadgroup``) the same key becomes an
``xdist_group`` mark, so one worker runs all of a module's shared-guest tests on one guest
while tests with guests of their own spread over every worker. (pytest-xdist 3.8 on pytest 9.2
ignores the groups, pytest-dev/pytest-xdist#1386; then each worker that draws a shared-guest
test boots its own copy of that guest, in a folder named after the worker -- correct, one boot
per worker dearer.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

#: the fixture behind ``p2p_vm``: one guest per test module
SHARED_GUEST = "shared_p2p_machine"

_SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (1-based) of ``total`` parts of a run."""

    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> Shard(2, 4); anything else is a usage error naming the expected shape."""
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"shard {text!r} is not I/N (e.g. 1/4)")
    index, total = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= total:
        raise ValueError(f"shard {text!r}: I must be between 1 and N")
    return Shard(index, total)


def group_key(nodeid: str, fixturenames: Sequence[str]) -> str:
    """What must run together: the module for shared-guest tests, else the test itself."""
    if SHARED_GUEST in fixturenames:
        return nodeid.split("::", 1)[0]
    return nodeid


def shard_of(keys: Sequence[str], shard: Shard) -> set[str]:
    """The group keys ``shard`` runs: the sorted distinct keys dealt round robin."""
    ordered = sorted(set(keys))
    return {key for i, key in enumerate(ordered) if i % shard.total == shard.index - 1}


def _keys(items: list[pytest.Item]) -> list[str]:
    # an item may name its group itself (a kselftest program's tests share one guest run)
    return [
        getattr(item, "testbed_group", None)
        or group_key(item.nodeid, getattr(item, "fixturenames", ()))
        for item in items
    ]


def mark_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give shared-guest tests their module's ``xdist_group``. Must run before xdist's own
    collection hook on the worker, which turns the mark into the node id's ``@group``."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item, key in zip(items, _keys(items), strict=True):
        if key != item.nodeid:
            item.add_marker(pytest.mark.xdist_group(name=key))


def select(config: pytest.Config, items: list[pytest.Item], shard: Shard) -> None:
    """Deselect the tests of the other shards (in place, reported as deselected)."""
    mine = shard_of(_keys(items), shard)
    keys = _keys(items)
    dropped = [item for item, key in zip(items, keys, strict=True) if key not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item, key in zip(items, keys, strict=True) if key in mine]
