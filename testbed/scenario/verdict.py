"""Judging a run as a whole: pure functions over what the runner collected.

A run passes only if

* the guest stays healthy: no panic, Oops, BUG, WARNING, KASAN, UBSAN, lockdep report, hung
  task, RCU stall or lockup on the console (:mod:`testbed.guest.console`);
* no DMA lands in the exporter's BAR after the exporter zapped its mappings on unplug: an
  app's ``dma-write`` that *started* after the drivers' timeline says ``remove zapped`` and
  before the exporter probed again must have failed (if it succeeded, its pattern in the
  BAR file is the evidence); and the BAR file does not change after ``DEVICE_DELETED``;
* no remove gave up waiting for an importer (``unplug_timeouts`` beyond the allowance), and
  no remove that did not give up completed before an importer's ``p2p_unmap`` of that
  exporter (claim 6 with several importers: the wait is for *every* importer);
* module use counts end where they started and the guest's slab grows by less than a bound;
* every unplug completes within its bound (or, expected to time out, fails within it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from testbed.p2p.debugfs import Event
from testbed.scenario.apps import CommandResult

#: A DMA must start this long after the zap to count as late: stamps of one guest clock, but
#: the DMA's own start is derived (print time minus the driver's duration).
LATE_MARGIN_NS = 2_000_000


@dataclass(frozen=True)
class LateDMA:
    """A DMA that started after the exporter zapped its mappings and still succeeded."""

    app: str
    command: str
    start_ns: int
    zap_ns: int
    offset: int  #: into the app's object
    length: int
    pattern: int | None

    def describe(self) -> str:
        after_ms = (self.start_ns - self.zap_ns) / 1e6
        return (
            f"app {self.app}: '{self.command}' started {after_ms:.0f} ms "
            "after the exporter's remove zapped every mapping, and succeeded (a p2p_map after "
            "the device began to go away)"
        )


def zap_windows(events: Iterable[Event]) -> list[tuple[int, int]]:
    """``[zap, next exporter probe)`` intervals of the exporter's timeline, in guest ns."""
    windows: list[tuple[int, int]] = []
    open_at: int | None = None
    for e in sorted(events, key=lambda e: e.t_ns):
        if e.module != "p2p_exporter":
            continue
        if e.text.startswith("remove zapped") and open_at is None:
            open_at = e.t_ns
        elif e.text.startswith("probe") and open_at is not None:
            windows.append((open_at, e.t_ns))
            open_at = None
    if open_at is not None:
        windows.append((open_at, 1 << 63))
    return windows


def unmaps_after_remove(events: Iterable[Event]) -> list[str]:
    """``p2p_unmap``s of an exporter that came after its ``remove done`` although that remove
    did not time out: remove claimed every importer had unmapped, and one had not.

    Per exporter (the event's device), a ``remove begin`` opens a remove, ``remove unplug wait
    timed out`` marks it as one that gave up (late unmaps are then expected, and judged by the
    ``unplug_timeouts`` rule), ``remove done`` closes it, and a ``probe`` starts afresh.
    """
    done_at: dict[str, int] = {}
    gave_up: dict[str, bool] = {}
    out = []
    for e in sorted(events, key=lambda e: e.t_ns):
        if e.module != "p2p_exporter":
            continue
        if e.text.startswith(("remove begin", "probe")):
            done_at.pop(e.device, None)
            gave_up[e.device] = False
        elif e.text.startswith("remove unplug wait timed out"):
            gave_up[e.device] = True
        elif e.text.startswith("remove done"):
            done_at[e.device] = e.t_ns
        elif e.text.startswith("unmap ") and e.device in done_at and not gave_up.get(e.device):
            late_ms = (e.t_ns - done_at[e.device]) / 1e6
            out.append(
                f"the exporter {e.device}'s remove completed {late_ms:.0f} ms before "
                f"'{e.text}': unplug must wait for every importer's p2p_unmap"
            )
    return out


def _int(text: str | None, default: int) -> int:
    return int(text, 0) if text is not None else default


def late_dmas(app: str, results: Sequence[CommandResult], events: Iterable[Event]) -> list[LateDMA]:
    """The app's successful ``dma-write``s that started inside a zap window."""
    windows = zap_windows(events)
    late = []
    for cr in results:
        r = cr.result
        if r.op != "dma-write" or not r.ok or r.get("queued") or "ns" not in r.fields:
            continue
        start = int(r["t_ns"]) - int(r["ns"])
        for zap, end in windows:
            if zap + LATE_MARGIN_NS <= start < end:
                args = cr.args
                late.append(
                    LateDMA(
                        app,
                        cr.command,
                        start,
                        zap,
                        _int(args.get("off"), 0),
                        _int(args.get("len"), 4096),
                        _int(args["pattern"], 0) if "pattern" in args else None,
                    )
                )
                break
    return late


def unexpected_errors(
    app: str, results: Sequence[CommandResult], allowed: Iterable[str]
) -> list[str]:
    """Failed commands whose error is not one the scenario allows (and not expected); and
    commands that succeeded where their ``expect=`` wanted a failure (a DMA that should have
    been refused is a finding, whatever the allow list)."""
    allow = set(allowed)
    out = []
    for cr in results:
        r = cr.result
        if r.ok and r.get("expected") is False:
            out.append(f"app {app}: '{cr.command}' succeeded, against its expect=")
            continue
        if r.ok or r.get("expected") is True:
            continue
        if r.error not in allow:
            out.append(f"app {app}: '{cr.command}' failed with {r.error or r.fields}")
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def module_refs(proc_modules: str, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    out = {}
    for line in proc_modules.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in wanted:
            out[parts[0]] = int(parts[2])
    return out


def compare(op: str, actual: int, expected: int) -> bool:
    return {
        "==": actual == expected,
        "!=": actual != expected,
        "<=": actual <= expected,
        ">=": actual >= expected,
        "<": actual < expected,
        ">": actual > expected,
    }[op]
