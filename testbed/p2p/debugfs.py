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
