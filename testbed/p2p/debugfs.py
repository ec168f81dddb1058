"""The drivers' debugfs files: counters (``name value`` lines) and the shared event timeline."""

from __future__ import annotations

import re
from dataclasses import dataclass

from testbed.guest.ssh import GuestShell

EXPORTER_DIR = "/sys/kernel/debug/p2p_exporter"
IMPORTER_DIR = "/sys/kernel/debug/p2p_importer"


def parse_counters(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            out[parts[0]] = int(parts[1])
    return out


def exporter_stats(shell: GuestShell) -> dict[str, int]:
    """Totals since the exporter module was loaded."""
    return parse_counters(shell.run_check(f"cat {EXPORTER_DIR}/stats").stdout)


def importer_stats(shell: GuestShell) -> dict[str, int]:
    return parse_counters(shell.run_check(f"cat {IMPORTER_DIR}/stats").stdout)


@dataclass(frozen=True)
class Event:
    t_ns: int
    module: str  #: ``p2p_exporter`` or ``p2p_importer``
    device: str  #: PCI name
    text: str

    @property
    def t(self) -> float:
        return self.t_ns / 1e9


def parse_events(text: str) -> list[Event]:
    events = []
    for line in text.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[0].isdigit():
            events.append(Event(int(parts[0]), parts[1], parts[2], parts[3]))
    return events


def events(shell: GuestShell) -> list[Event]:
    """The last events of both drivers, oldest first, realtime-stamped in the guest."""
    return parse_events(shell.run_check(f"cat {EXPORTER_DIR}/events").stdout)


def exporter_devices(shell: GuestShell) -> list[str]:
    """PCI names of the devices the exporter drives (its per-device debugfs folders)."""
    names = shell.run_check(f"ls {EXPORTER_DIR}").stdout.split()
    return [name for name in names if name.startswith("0000:")]


def evict(shell: GuestShell, handle: int) -> None:
    """Move object ``handle`` through the exporter's debugfs trigger: from outside the
    process that owns it, as a host-side test or a developer at a shell would."""
    (bdf,) = exporter_devices(shell)
    shell.run_check(f"echo {handle} > {EXPORTER_DIR}/{bdf}/evict")


def module_refcount(shell: GuestShell, module: str) -> int:
    """The use count ``/proc/modules`` shows for ``module``."""
    for line in shell.run_check("cat /proc/modules").stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == module:
            return int(parts[2])
    raise AssertionError(f"module {module} is not loaded")


@dataclass(frozen=True)
class Live:
    """What the exporter's debugfs ``live`` file counts from its data (not its counters)."""

    records: int  #: p2p_map records on every object of every exporter, removed ones too
    importer_refs: int  #: importer device references those records hold

    @property
    def idle(self) -> bool:
        return self.records == 0 and self.importer_refs == 0


def parse_live(text: str) -> Live:
    counters = parse_counters(text)
    missing = {"records", "importer_refs"} - counters.keys()
    if missing:
        raise AssertionError(f"{EXPORTER_DIR}/live lacks {sorted(missing)}: {text!r}")
    return Live(counters["records"], counters["importer_refs"])


def live(shell: GuestShell) -> Live:
    """The p2p_map records and importer references alive now, in every exporter."""
    return parse_live(shell.run_check(f"cat {EXPORTER_DIR}/live").stdout)


def balance_problems(live_now: Live, exporter: dict[str, int]) -> list[str]:
    """Disagreements between what is live and the exporter's counters (totals since load).

    Every live record is one ``imports`` and holds one importer reference; every record
    ever made is a ``maps``, and ends as an ``unmaps`` (or, with a ``P2P-WARN``, when its
    object is freed under it -- then ``maps - unmaps`` exceeds ``imports``).
    """
    problems = []
    if live_now.records != exporter["imports"]:
        problems.append(
            f"{live_now.records} live records but the 'imports' counter says {exporter['imports']}"
        )
    if live_now.importer_refs != live_now.records:
        problems.append(
            f"{live_now.importer_refs} importer references held for {live_now.records} live records"
        )
    if exporter["maps"] - exporter["unmaps"] < live_now.records:
        problems.append(
            f"maps {exporter['maps']} - unmaps {exporter['unmaps']} is less than "
            f"the {live_now.records} live records"
        )
    return problems
