"""The run verdict's pure parts: late DMA after the exporter's zap, error codes, meminfo."""

from __future__ import annotations

from testbed.p2p import ctl
from testbed.p2p.debugfs import Event
from testbed.scenario import verdict
from testbed.scenario.apps import CommandResult, pair

MS = 1_000_000


def dma(t_ms: int, ns_ms: int, pattern: int, *, ok: bool = True) -> CommandResult:
    fields: dict[str, object] = {"t_ns": t_ms * MS}
    if ok:
        fields["ns"] = ns_ms * MS
    else:
        fields["error"] = "ENODEV"
    return CommandResult(
        f"dma-write off=0x1000 len=2048 pattern={pattern:#x}", ctl.Step("dma-write", ok, fields)
    )


def ev(t_ms: int, text: str, module: str = "p2p_exporter") -> Event:
    return Event(t_ms * MS, module, "0000:01:00.0", text)


TIMELINE = [
    ev(900, "remove begin importers=1"),
    ev(1000, "remove zapped importers_before=1 importers_after=0 zap_ns=1"),
    ev(1001, "remove done total_ns=1"),
    ev(5000, "probe"),
]


def test_a_dma_that_started_after_the_zap_and_succeeded_is_late() -> None:
    results = [dma(990, 200, 0x11), dma(1300, 200, 0x12), dma(1500, 100, 0x13, ok=False)]
    late = verdict.late_dmas("stream", results, TIMELINE)
    assert [(d.pattern, d.offset, d.length) for d in late] == [(0x12, 0x1000, 2048)]
    assert late[0].start_ns == 1100 * MS and late[0].zap_ns == 1000 * MS
    assert "started 100 ms after the exporter's remove zapped" in late[0].describe()


def test_a_dma_in_flight_at_the_zap_or_after_the_next_probe_is_not_late() -> None:
    results = [dma(1150, 200, 1), dma(5400, 200, 2)]  # started 950 ms; started after probe
    assert verdict.late_dmas("s", results, TIMELINE) == []


def test_no_zap_no_window_and_importer_events_do_not_count() -> None:
    events = [ev(1000, "remove zapped importers_before=0", module="p2p_importer")]
    assert verdict.zap_windows(events) == []
    assert verdict.zap_windows([ev(7, "remove zapped early (planted race)")]) == [(7 * MS, 1 << 63)]


def test_an_unmap_after_a_remove_that_did_not_give_up_is_a_finding() -> None:
    """Claim 6 with two importers: remove said done while importer2 still had its mapping."""
    events = [
        ev(900, "remove begin importers=2"),
        ev(1000, "remove zapped importers_before=2 importers_after=2 zap_ns=1"),
        ev(1500, "unmap importer=0000:02:00.0 handle=1 bus=0xf8000000 (device gone)"),
        ev(1501, "remove all importers unmapped wait_ns=1"),
        ev(1502, "remove done total_ns=1"),
        ev(3000, "unmap importer=0000:03:00.0 handle=1 bus=0xf8000000 (device gone)"),
    ]
    (finding,) = verdict.unmaps_after_remove(events)
    assert "remove completed 1498 ms before 'unmap importer=0000:03:00.0" in finding
    # an importer's own unmap events (its device field is the importer) do not count
    assert verdict.unmaps_after_remove([*events[:5], ev(3000, "unmap x", "p2p_importer")]) == []


def test_unmaps_after_a_remove_that_gave_up_or_before_done_are_not_findings() -> None:
    gave_up = [
        ev(900, "remove begin importers=1"),
        ev(2000, "remove unplug wait timed out after 1000 ms, importers=1"),
        ev(2001, "remove done total_ns=1"),
        ev(3000, "unmap importer=0000:02:00.0 handle=1 bus=0x1 (device gone)"),
    ]
    assert verdict.unmaps_after_remove(gave_up) == []
    waited = [
        ev(900, "remove begin importers=1"),
        ev(1200, "unmap importer=0000:02:00.0 handle=1 bus=0x1 (device gone)"),
        ev(1201, "remove done total_ns=1"),
        ev(5000, "probe"),
        ev(6000, "unmap importer=0000:02:00.0 handle=1 bus=0x1"),  # the new device's
    ]
    assert verdict.unmaps_after_remove(waited) == []


def test_unexpected_errors_allow_listed_and_expected_ones() -> None:
    steps = [
        CommandResult("dma-write", ctl.Step("dma-write", False, {"error": "ENODEV"})),
        CommandResult("touch", ctl.Step("touch", False, {"signal": "SIGBUS"})),
        CommandResult("reg", ctl.Step("reg", False, {"error": "EIO"})),
        CommandResult(
            "reg expect=EPERM", ctl.Step("reg", False, {"error": "EPERM", "expected": True})
        ),
    ]
    assert verdict.unexpected_errors("a", steps, ["ENODEV", "SIGBUS"]) == [
        "app a: 'reg' failed with EIO"
    ]


def test_unexpected_errors_include_a_success_that_was_expected_to_fail() -> None:
    wanted_efault = "dma-write pattern=0x12 expect=EFAULT"
    steps = [
        CommandResult(wanted_efault, ctl.Step("dma-write", True, {"expected": False})),
        CommandResult("munmap expect=ok", ctl.Step("munmap", True, {"expected": True})),
    ]
    assert verdict.unexpected_errors("a", steps, ["EFAULT"]) == [
        f"app a: '{wanted_efault}' succeeded, against its expect="
    ]


def test_pair_skips_the_holding_line_and_stops_at_a_kill() -> None:
    run = ctl.parse(
        '{"op":"create","ok":true}\n'
        '{"op":"hold","state":"holding","pid":5}\n'
        '{"op":"hold","ok":true,"state":"released"}\n'
    )
    paired = pair(("create", "hold", "touch"), run)
    assert [(p.command, p.result.op) for p in paired] == [("create", "create"), ("hold", "hold")]


def test_meminfo_and_module_refs() -> None:
    info = verdict.parse_meminfo("MemTotal:  1000 kB\nSlab:  20 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 1024000, "Slab": 20480, "HugePages_Total": 0}
    mods = "p2p_importer 40960 0 - Live 0x0 (O)\np2p_exporter 49152 2 p2p_importer, Live 0x0 (O)\n"
    assert verdict.module_refs(mods, ["p2p_exporter", "p2p_importer"]) == {
        "p2p_importer": 0,
        "p2p_exporter": 2,
    }


def test_compare() -> None:
    assert verdict.compare(">=", 2, 1) and not verdict.compare("==", 2, 1)
