"""Guest health as a test outcome: console findings fail the test that was running."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from testbed.guest import console
from testbed.pytest_plugin.state import WATCHED, Watched
from testbed.qemu.machine import Machine


def allowed(item: pytest.Item) -> tuple[console.Problem, ...]:
    """The problems a test declared it expects, with ``@pytest.mark.console_allows(...)``."""
    marker = item.get_closest_marker("console_allows")
    return tuple(marker.args) if marker is not None else ()


def watched(item: pytest.Item, machines: Sequence[Machine] | None = None) -> list[Watched]:
    """The consoles ``item`` answers for (only those of ``machines``, if given)."""
    entries = item.stash.get(WATCHED, [])
    if machines is None:
        return entries
    return [w for w in entries if any(w.machine is m for m in machines)]


def check(item: pytest.Item, entries: list[Watched]) -> None:
    """Scan what each console printed since the last check; raise on unexpected problems."""
    allow = allowed(item)
    for entry in entries:
        report = entry.tail.check_new()
        console.raise_for_problems(
            report, allow=allow, source=f"{entry.label} console ({entry.machine.console_log})"
        )


def attach(item: pytest.Item, entries: list[Watched]) -> None:
    """After a failure: put what the consoles showed next to the failure, without raising."""
    for entry in entries:
        report = entry.tail.check_new()
        if not report.ok:
            item.add_report_section("call", f"{entry.label} console", report.summary())
