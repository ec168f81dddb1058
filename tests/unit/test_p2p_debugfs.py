"""The drivers' debugfs files and /proc/modules (testbed.p2p.debugfs), through a fake shell.

Sample files in ``tests/data/p2p/`` follow the drivers' ``seq_printf`` formats
(``qemu-devices/p2p/exporter/p2p_exporter.c``: ``"%s %lld\\n"`` counters, ``"%llu %s\\n"``
events whose text is ``"<module> <bdf> <message>"``) and the kernel's /proc/modules layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import GuestCommandError
from testbed.guest.ssh import COMMAND_TIMEOUT, CommandResult, GuestShell
from testbed.p2p import debugfs
from testbed.p2p.debugfs import Event, module_refcount, parse_counters, parse_events

DATA = Path(__file__).resolve().parent.parent / "data" / "p2p"


class FileShell(GuestShell):
    """``cat PATH`` answers from a dict; anything else is a test error."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.commands: list[str] = []

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        self.commands.append(command)
        verb, _, path = command.partition(" ")
        assert verb == "cat", command
        if path not in self.files:
            return CommandResult(command, 1, "", f"cat: can't open '{path}'\n", 0.0)
        return CommandResult(command, 0, self.files[path], "", 0.0)


# ---- counters --------------------------------------------------------------------------------


def test_parse_counters_reads_the_exporter_totals() -> None:
    stats = parse_counters((DATA / "exporter-stats.txt").read_text())
    assert stats["devices"] == 1
    assert stats["objects_created"] == 5
    assert stats["faults"] == 12
    assert stats["unplug_waits"] == 1
    assert stats["leaked_pages"] == 0
    assert len(stats) == 15


def test_parse_counters_keeps_negative_values() -> None:
    assert parse_counters("objects -1\n") == {"objects": -1}


@pytest.mark.parametrize(
    "line",
    [
        "object 1 offset 0x0 size 65536 bus 0xf8000000 flags 0x0 generation 1 importers 1",
        "  importer 0000:02:00.0 driver p2p_importer va 0x1-0x2 bus 0x3 t_ns 4",
        "dead",
        "bus 0xf8000000",  # hex is not a counter
        "maps 1.5",
        "",
    ],
)
def test_parse_counters_ignores_lines_that_are_not_name_value(line: str) -> None:
    assert parse_counters(f"maps 3\n{line}\nunmaps 2\n") == {"maps": 3, "unmaps": 2}


def test_parse_counters_last_value_wins() -> None:
    assert parse_counters("dead 0\ndead 1\n") == {"dead": 1}


def test_stats_read_the_right_files() -> None:
    shell = FileShell(
        {
            "/sys/kernel/debug/p2p_exporter/stats": "devices 1\nmaps 2\n",
            "/sys/kernel/debug/p2p_importer/stats": "devices 1\ndma_writes 9\n",
        }
    )
    assert debugfs.exporter_stats(shell) == {"devices": 1, "maps": 2}
    assert debugfs.importer_stats(shell) == {"devices": 1, "dma_writes": 9}
    assert shell.commands == [
        "cat /sys/kernel/debug/p2p_exporter/stats",
        "cat /sys/kernel/debug/p2p_importer/stats",
    ]


def test_stats_of_a_missing_module_raise() -> None:
    with pytest.raises(GuestCommandError):
        debugfs.exporter_stats(FileShell({}))


# ---- events ----------------------------------------------------------------------------------


def test_parse_events_splits_stamp_module_device_text() -> None:
    events = parse_events((DATA / "events.txt").read_text())
    assert len(events) == 4
    assert events[0] == Event(
        1795654644633054238, "p2p_exporter", "0000:01:00.0", "create handle=1 offset=0x0 size=65536"
    )
    assert events[2].module == "p2p_importer"
    assert events[2].device == "0000:02:00.0"
    # the message keeps its inner spacing
    assert events[2].text == "dma-write bus=0xf8001000 len=4096  done"
    assert events[3].text == "remove: waiting for 1 importer(s)"
    assert events[0].t == pytest.approx(1795654644.633054238)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "p2p_exporter 0000:01:00.0 create handle=1",  # no stamp
        "-5 p2p_exporter 0000:01:00.0 create",  # not a stamp
        "123 p2p_exporter 0000:01:00.0",  # no message
    ],
)
def test_parse_events_skips_malformed_lines(line: str) -> None:
    text = f"1 p2p_exporter 0000:01:00.0 a\n{line}\n2 p2p_importer 0000:02:00.0 b\n"
    assert [e.text for e in parse_events(text)] == ["a", "b"]


def test_events_reads_the_shared_timeline() -> None:
    shell = FileShell({"/sys/kernel/debug/p2p_exporter/events": "7 p2p_importer 0000:02:00.0 x\n"})
    assert debugfs.events(shell) == [Event(7, "p2p_importer", "0000:02:00.0", "x")]


# ---- /proc/modules ---------------------------------------------------------------------------


@pytest.fixture
def proc_modules() -> FileShell:
    return FileShell({"/proc/modules": (DATA / "proc-modules.txt").read_text()})


@pytest.mark.parametrize(
    ("module", "count"),
    [("p2p_exporter", 1), ("p2p_importer", 0), ("p2p", 3), ("failover", 1), ("virtio_net", 0)],
)
def test_module_refcount(proc_modules: FileShell, module: str, count: int) -> None:
    assert module_refcount(proc_modules, module) == count
    assert proc_modules.commands == ["cat /proc/modules"]


@pytest.mark.parametrize("module", ["p2p_exp", "edu", "p2p_exporter,", "36864"])
def test_module_refcount_of_a_module_not_loaded(proc_modules: FileShell, module: str) -> None:
    with pytest.raises(AssertionError, match=f"module {module} is not loaded"):
        module_refcount(proc_modules, module)
