"""Kernel reports on the serial console (testbed.guest.console).

Most cases run on logs in ``tests/data/console/``: real captures from the Debian 6.1 guest
(clean boot, WARN, BUG, Oops, general protection fault, hung task, soft lockup, RCU stall,
panics) and hand-written ones modelled on the upstream format strings for what that kernel
cannot print (KASAN, UBSAN, lockdep, kmemleak, hard lockup). README.md there says which is
which. Line numbers below are those of ``grep -n`` on those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.errors import GuestPanic, GuestUnhealthy
from testbed.guest.console import (
    EXCERPT_LINES,
    ConsoleTail,
    Finding,
    HealthReport,
    MarkerWatch,
    Problem,
    check,
    raise_for_problems,
    scan,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "console"


def findings(name: str) -> tuple[Finding, ...]:
    return check(DATA / name).findings


@dataclass(frozen=True)
class Expect:
    """One expected finding: kind, headline line, printk time, headline start, excerpt span."""

    problem: Problem
    line_no: int
    timestamp: float
    headline: str  # what the headline starts with
    first: int  # line number of the excerpt's first line
    last: int  # line number of the excerpt's last line


def assert_findings(name: str, expected: list[Expect]) -> None:
    lines = (DATA / name).read_bytes().decode().split("\n")
    got = findings(name)
    assert [f.problem for f in got] == [e.problem for e in expected]
    for f, e in zip(got, expected, strict=True):
        assert f.line_no == e.line_no, f.headline
        assert f.timestamp == pytest.approx(e.timestamp, abs=1e-7)
        assert f.headline.startswith(e.headline), f.headline
        assert not f.headline.startswith("[")  # the printk prefix is stripped
        want = tuple(line.rstrip("\r") for line in lines[e.first - 1 : e.last])
        assert f.excerpt == want, f"{f.problem}: excerpt {f.excerpt[0]!r} .. {f.excerpt[-1]!r}"


# -- real captures ------------------------------------------------------------------------


def test_clean_boot_has_no_findings() -> None:
    text = (DATA / "clean-boot.log").read_bytes().decode()
    # The capture does contain the lines that must not count (see the README).
    assert "loading out-of-tree module taints kernel." in text
    assert "module verification failed: signature and/or required key missing" in text
    assert "with NULL argv: empty string added" in text
    assert "WARNING: CPU: feels slow today" in text
    assert "\x1b[1;31mERROR\x1b[0m: BUG: in the test script" in text
    assert "\r\n" in text
    report = check(DATA / "clean-boot.log")
    assert report.ok
    assert report.findings == ()
    assert report.summary() == "no kernel problems"


def test_benign_noise_has_no_findings() -> None:
    assert check(DATA / "synthetic-benign-noise.log").ok


def test_warn_bug_hung_task_soft_lockup_rcu_stall() -> None:
    assert_findings(
        "faults-nonfatal.log",
        [
            # WARN(1, fmt): from "cut here" (line 14, the message is line 15) to end trace.
            Expect(Problem.WARNING, 16, 3.018650, "WARNING: CPU: 0 PID: 106 at ", 14, 52),
            # msleep() with preemption off; the shell then dies and trips it a second time.
            Expect(Problem.BUG, 53, 3.089876, "BUG: scheduling while atomic: sh/107/", 53, 85),
            Expect(Problem.BUG, 88, 3.120113, "BUG: scheduling while atomic: sh/107/", 88, 113),
            Expect(Problem.HUNG_TASK, 115, 7.172314, "INFO: task sh:108 blocked for", 115, 144),
            Expect(Problem.SOFT_LOCKUP, 145, 11.025944, "watchdog: BUG: soft lockup", 145, 189),
            # Sleeping in an RCU reader: RCU's own WARN, then the stall it causes.
            Expect(Problem.WARNING, 193, 12.344471, "WARNING: CPU: 0 PID: 110 at ", 191, 245),
            Expect(Problem.RCU_STALL, 246, 15.351729, "rcu: INFO: rcu_preempt detected", 246, 284),
        ],
    )


def test_oops_gpf_and_bug_are_one_finding_each() -> None:
    assert_findings(
        "faults-oops.log",
        [
            # The "BUG: kernel NULL pointer dereference" prelude heads the Oops it announces.
            Expect(Problem.OOPS, 14, 21.518678, "BUG: kernel NULL pointer dereference", 14, 60),
            Expect(Problem.GENERAL_PROTECTION, 74, 21.552952, "general protection fault", 74, 112),
            # BUG(): "kernel BUG at" and its "invalid opcode" die line are one report.
            Expect(Problem.BUG, 126, 21.627913, "kernel BUG at /tmp/faults/", 125, 168),
        ],
    )
    oops, gpf, bug = findings("faults-oops.log")
    assert any("Oops: 0002 [#1]" in line for line in oops.excerpt)
    assert any("invalid opcode: 0000 [#3]" in line for line in bug.excerpt)
    # The register summary after "end trace" repeats the first Oops, not this one.
    assert not any("fault_oops" in line for line in gpf.excerpt)


def test_oops_followed_by_panic_is_two_findings() -> None:
    assert_findings(
        "oops-panic.log",
        [
            Expect(Problem.OOPS, 375, 2.646197, "BUG: kernel NULL pointer dereference", 375, 426),
            # pvpanic paused the guest right after this line: the excerpt is what there is.
            Expect(Problem.PANIC, 439, 2.659561, "Kernel panic - not syncing: Fatal exc", 439, 439),
        ],
    )


def test_sysrq_crash_panic_runs_to_the_end_of_the_text() -> None:
    assert_findings(
        "panic-sysrq.log",
        [Expect(Problem.PANIC, 372, 2.766512, "Kernel panic - not syncing: sysrq", 372, 408)],
    )


# -- formats this kernel cannot print, modelled on upstream -------------------------------


def test_kasan_is_one_kasan_finding_between_its_rules() -> None:
    assert_findings(
        "synthetic-kasan.log",
        [Expect(Problem.KASAN, 3, 31.412789, "BUG: KASAN: slab-out-of-bounds in", 2, 51)],
    )


def test_ubsan_before_and_after_6_6() -> None:
    assert_findings(
        "synthetic-ubsan.log",
        [
            Expect(Problem.UBSAN, 3, 12.345702, "UBSAN: array-index-out-of-bounds", 2, 17),
            Expect(Problem.UBSAN, 20, 58.100031, "UBSAN: shift-out-of-bounds", 19, 30),
        ],
    )


def test_lockdep_reports_are_lockdep_not_warning_or_bug() -> None:
    assert_findings(
        "synthetic-lockdep.log",
        [
            Expect(Problem.LOCKDEP, 4, 40.100003, "WARNING: possible circular locking", 3, 58),
            Expect(Problem.LOCKDEP, 60, 52.600001, "BUG: sleeping function called", 60, 75),
        ],
    )


def test_kmemleak_summary_is_one_line() -> None:
    assert_findings(
        "synthetic-kmemleak.log",
        [Expect(Problem.KMEMLEAK, 4, 663.804321, "kmemleak: 2 new suspected memory leaks", 4, 4)],
    )


def test_hard_lockup_then_panic_with_its_end_marker() -> None:
    assert_findings(
        "synthetic-hard-lockup.log",
        [
            Expect(Problem.HARD_LOCKUP, 2, 322.512345, "NMI watchdog: Watchdog detected", 2, 28),
            Expect(
                Problem.PANIC, 29, 322.512372, "Kernel panic - not syncing: Hard LOCKUP", 29, 54
            ),
        ],
    )


def test_rcu_self_detected_stall_keeps_the_irq_and_task_stacks() -> None:
    assert_findings(
        "synthetic-rcu-self-stall.log",
        [Expect(Problem.RCU_STALL, 2, 245.012345, "rcu: INFO: rcu_preempt self-detected", 2, 48)],
    )


def test_p2p_driver_warnings_are_one_line_findings_of_their_own() -> None:
    assert_findings(
        "p2p-warnings.log",
        [
            Expect(
                Problem.P2P_WARNING,
                22,
                7.806808,
                "p2p_exporter: P2P-WARN: 0000:01:00.0: "
                "object 1 freed while 0000:02:00.0 still had it mapped",
                22,
                22,
            ),
            Expect(
                Problem.P2P_WARNING,
                24,
                21.173489,
                "p2p_exporter: P2P-WARN: 0000:01:00.0: evict timed out: importer 0000:02:00.0",
                24,
                24,
            ),
        ],
    )
    # the drivers' ordinary event lines around them are not findings
    assert (
        sum(
            "p2p_exporter 0000:01:00.0: unmap" in line
            for line in (DATA / "p2p-warnings.log").read_text().splitlines()
        )
        == 3
    )


def test_p2p_warnings_from_the_importer_and_the_ratelimited_form() -> None:
    lines = [
        "[   9.000001] p2p_importer: P2P-WARN: 0000:02:00.0: p2p_unmap of MR 3 failed: -2",
        "[   9.000002] p2p_exporter: P2P-WARN: p2p_unmap by 0000:02:00.0 of [7f00-7f10) that "
        "it has not mapped",
        "[   9.000003] p2p_exporter: 2 callbacks suppressed",
        "P2P-WARN: a userspace echo is not a finding",
        "[   9.000004] some_module: mentions P2P-WARN: in the middle, not a finding",
    ]
    got = scan(lines)
    assert [(f.problem, f.line_no) for f in got] == [
        (Problem.P2P_WARNING, 1),
        (Problem.P2P_WARNING, 2),
    ]
    with pytest.raises(GuestUnhealthy, match="P2P driver warning"):
        raise_for_problems(HealthReport(tuple(got)))
    raise_for_problems(HealthReport(tuple(got)), allow=[Problem.P2P_WARNING])


def test_every_problem_kind_is_covered_by_a_log() -> None:
    seen = {f.problem for path in DATA.glob("*.log") for f in check(path).findings}
    assert seen == set(Problem)


def test_problem_values_are_distinct_human_names() -> None:
    values = [p.value for p in Problem]
    assert len(set(values)) == len(values)
    assert Problem.PANIC.value == "kernel panic"


# -- line handling ------------------------------------------------------------------------

WARN_REPORT = [
    "[   50.000001] ------------[ cut here ]------------",
    "[   50.000002] p2p_exporter: BAR2 still mapped",
    "[   50.000003] by 2 importers",
    "[   50.000004] WARNING: CPU: 1 PID: 77 at drivers/misc/p2p.c:9 p2p_remove+0x1/0x2 [p2p]",
    "[   50.000005] Modules linked in: p2p(OE)",
    "[   50.000006] Call Trace:",
    "[   50.000007]  <TASK>",
    "[   50.000008]  p2p_remove+0x1/0x2 [p2p]",
    "[   50.000009]  </TASK>",
    "[   50.000010] ---[ end trace 0000000000000000 ]---",
]


def test_crlf_and_ansi_are_cleaned_from_lines_and_excerpts() -> None:
    text = "".join(f"\x1b[0m{line}\x1b[K\r\n" for line in WARN_REPORT)
    text = "\x1b]0;guest\x07\x1b[1;32mbooting\x1b[0m\r\n" + text
    (f,) = check(text).findings
    assert f.problem is Problem.WARNING
    assert f.line_no == 5
    assert f.headline == WARN_REPORT[3][15:]
    assert f.excerpt == tuple(WARN_REPORT)


def test_warn_message_lines_between_cut_here_and_warning_are_in_the_excerpt() -> None:
    (f,) = scan(["[    1.000000] unrelated", *WARN_REPORT])
    assert f.excerpt[0].endswith("------------[ cut here ]------------")
    assert f.excerpt[1:3] == tuple(WARN_REPORT[1:3])
    assert f.line_no == 5


def test_kernel_line_in_the_middle_of_a_userspace_line() -> None:
    text = (
        "[    1.000000] Run /init as init process\n"
        "testbed login: [   12.345678] Kernel panic - not syncing: Attempted to kill init!"
        " exitcode=0x0000000b\n"
    )
    (f,) = check(text).findings
    assert f.problem is Problem.PANIC
    assert f.line_no == 2
    assert f.timestamp == pytest.approx(12.345678)
    assert f.headline == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b"


def test_printk_caller_field_is_part_of_the_prefix() -> None:
    lines = [line.replace("] ", "][    T77] ", 1) for line in WARN_REPORT]
    (f,) = scan(lines)
    assert f.problem is Problem.WARNING
    assert f.headline.startswith("WARNING: CPU: 1 PID: 77 at ")
    assert f.timestamp == pytest.approx(50.000004)


def test_userspace_lines_never_count_when_the_kernel_lines_have_prefixes() -> None:
    text = (
        "[    1.000000] Run /init as init process\n"
        "Kernel panic - not syncing: just a script echoing text\n"
        "BUG: see the bug tracker\n"
        "WARNING: CPU: 0 PID: 1 at pretend.c:1 also a script\n"
    )
    assert check(text).ok


def test_a_log_without_printk_times_is_matched_line_by_line() -> None:
    lines = [line[15:] for line in WARN_REPORT]  # printk.time=0
    (f,) = scan(lines)
    assert f.problem is Problem.WARNING
    assert f.timestamp is None
    assert f.line_no == 4
    assert f.excerpt == tuple(lines)


def test_start_line_offsets_line_numbers() -> None:
    (f,) = scan(WARN_REPORT, start_line=101)
    assert f.line_no == 104


def test_scan_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        scan("\n".join(WARN_REPORT))


def test_a_lone_carriage_return_does_not_split_a_line(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"progress 10%\rprogress 20%\r\n" + "\r\n".join(WARN_REPORT).encode())
    (f,) = check(log).findings
    assert f.line_no == 5
    assert f.excerpt[0] == WARN_REPORT[0]


def test_check_reads_a_path_and_takes_a_str_as_text(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("\n".join(WARN_REPORT) + "\n")
    assert check(log) == check(log.read_text())
    assert check(str(log)).ok  # a str is text, never a file name


# -- report boundaries --------------------------------------------------------------------


def test_warning_cut_short_by_panic_on_warn() -> None:
    lines = [
        *WARN_REPORT[:6],
        "[   50.000011] Kernel panic - not syncing: kernel: panic_on_warn set ...",
        "[   50.000012] ---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---",
    ]
    warn, panic = scan(lines)
    assert warn.problem is Problem.WARNING
    assert warn.excerpt == tuple(lines[:6])
    assert panic.problem is Problem.PANIC
    assert panic.line_no == 7
    assert panic.excerpt == tuple(lines[6:])


def test_a_bug_line_without_a_trace_is_a_one_line_report() -> None:
    lines = [
        "[   80.000001] BUG: Bad rss-counter state mm:000000006b3d9b47 type:MM_ANONPAGES val:-1",
        *(f"[   80.0001{i:02d}] p2p_exporter 0000:01:00.0: unbound" for i in range(12)),
        "[   81.000000] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-56-cloud-amd64 #1",
    ]
    (f,) = scan(lines)
    assert f.problem is Problem.BUG
    assert f.excerpt == (lines[0],)


def test_gpf_in_the_6_9_format_with_kasan_hint_is_one_finding() -> None:
    lines = [
        "[    9.000001] Oops: general protection fault, probably for non-canonical address"
        " 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI",
        "[    9.000002] KASAN: null-ptr-deref in range [0x0000000000000008-0x000000000000000f]",
        "[    9.000003] CPU: 0 PID: 7 Comm: kworker/0:1 Not tainted 6.9.0 #1",
        "[    9.000004] ---[ end trace 0000000000000000 ]---",
    ]
    (f,) = scan(lines)
    assert f.problem is Problem.GENERAL_PROTECTION
    assert f.excerpt == tuple(lines)


def test_long_reports_are_capped() -> None:
    lines = [
        "[    5.000000] INFO: task kworker/u8:2:99 blocked for more than 120 seconds.",
        "[    5.000001] task:kworker/u8:2    state:D stack:0     pid:99    ppid:2",
        "[    5.000002] Call Trace:",
        "[    5.000003]  <TASK>",
        *(f"[    5.1{i:05d}]  frame_{i}+0x1/0x2" for i in range(200)),
        "[    6.000000]  </TASK>",
    ]
    (f,) = scan(lines)
    assert f.problem is Problem.HUNG_TASK
    assert len(f.excerpt) == EXCERPT_LINES
    assert f.excerpt[0] == lines[0]


def test_a_cut_here_of_an_earlier_report_is_not_taken() -> None:
    lines = [
        "[    1.000000] ------------[ cut here ]------------",
        "[    1.000001] ---[ end trace 0000000000000000 ]---",
        *WARN_REPORT[3:],
    ]
    (f,) = scan(lines)
    assert f.excerpt[0] == WARN_REPORT[3]


# -- HealthReport and raise_for_problems -------------------------------------------------


def oops_and_panic() -> HealthReport:
    return check(DATA / "oops-panic.log")


def test_report_of_and_summary() -> None:
    report = oops_and_panic()
    assert not report.ok
    assert [f.problem for f in report.of(Problem.PANIC)] == [Problem.PANIC]
    assert report.of(Problem.KASAN, Problem.WARNING) == ()
    summary = report.summary()
    assert summary.splitlines()[0] == "2 kernel problems: 1 kernel Oops, 1 kernel panic"
    assert "--- kernel Oops at line 375, t=2.646197: BUG: kernel NULL pointer" in summary
    assert "    [    2.647404] Oops: 0002 [#1] PREEMPT SMP NOPTI" in summary
    assert "--- kernel panic at line 439" in summary


def test_raise_for_problems_passes_a_clean_report() -> None:
    raise_for_problems(check(DATA / "clean-boot.log"))


def test_raise_for_problems_prefers_guest_panic() -> None:
    with pytest.raises(GuestPanic) as info:
        raise_for_problems(oops_and_panic(), source="importer console (run/console.log)")
    message = str(info.value)
    assert message.startswith("importer console (run/console.log): 2 kernel problems")
    assert "Kernel panic - not syncing: Fatal exception" in message


def test_raise_for_problems_raises_guest_unhealthy_without_a_panic() -> None:
    with pytest.raises(GuestUnhealthy) as info:
        raise_for_problems(check(DATA / "synthetic-kasan.log"))
    assert not isinstance(info.value, GuestPanic)
    assert "BUG: KASAN: slab-out-of-bounds" in str(info.value)
    assert str(info.value).startswith("console: 1 kernel problem: 1 KASAN report")


def test_allowed_problems_are_left_out_of_the_verdict_and_the_message() -> None:
    report = oops_and_panic()
    raise_for_problems(report, allow=[Problem.OOPS, Problem.PANIC])
    with pytest.raises(GuestUnhealthy) as info:
        raise_for_problems(report, allow={Problem.PANIC})
    assert not isinstance(info.value, GuestPanic)
    assert "Fatal exception" not in str(info.value)
    assert "1 kernel problem: 1 kernel Oops" in str(info.value)


# -- ConsoleTail --------------------------------------------------------------------------

BOOT = (
    "[    0.000000] Linux version 6.1.0-56-cloud-amd64\r\n[    2.000000] testbed-guest: ready\r\n"
)


def append(path: Path, text: str) -> None:
    with path.open("a", newline="") as f:
        f.write(text)


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    tail = ConsoleTail(tmp_path / "console.log")
    tail.mark()
    assert tail.read_new() == ""
    assert tail.check_new().ok


def test_tail_scans_only_what_was_appended_since_mark(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, BOOT + "\r\n".join(WARN_REPORT) + "\r\n")
    tail = ConsoleTail(log)
    tail.mark()  # the boot-time warning belongs to nobody's test
    assert tail.check_new().ok
    append(log, "\r\n".join(WARN_REPORT) + "\r\n")
    (f,) = tail.check_new().findings
    assert f.line_no == 2 + len(WARN_REPORT) + 4  # counted in the whole file
    assert f.excerpt == tuple(WARN_REPORT)
    assert tail.check_new().ok  # nothing new since the last check


def test_tail_leaves_an_incomplete_last_line_for_later(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, BOOT)
    tail = ConsoleTail(log)
    tail.mark()
    append(log, "[    9.000000] Kernel panic - not syn")
    assert tail.check_new().ok
    assert tail.read_new() == "[    9.000000] Kernel panic - not syn"
    tail.mark()  # does not skip the half-written line either
    append(log, "cing: Fatal exception\r\n")
    assert tail.read_new() == "[    9.000000] Kernel panic - not syncing: Fatal exception\r\n"
    (f,) = tail.check_new().findings
    assert f.problem is Problem.PANIC
    assert f.line_no == 3
    assert f.headline == "Kernel panic - not syncing: Fatal exception"


def test_tail_read_new_does_not_move_the_mark(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, BOOT)
    tail = ConsoleTail(log)
    tail.mark()
    append(log, "\n".join(WARN_REPORT) + "\n")
    assert tail.read_new() == tail.read_new() != ""
    assert tail.check_new().of(Problem.WARNING)
    assert tail.read_new() == ""


def test_tail_keeps_userspace_lines_out_after_a_timestamped_boot(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, BOOT)
    tail = ConsoleTail(log)
    tail.mark()
    append(log, "BUG: printed by a test script\r\n")  # no kernel line in this chunk
    assert tail.check_new().ok


def test_tail_starts_over_when_the_file_is_recreated(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, BOOT + BOOT + BOOT)
    tail = ConsoleTail(log)
    tail.mark()
    log.unlink()  # QEMU restarted: a new, shorter console.log
    append(log, WARN_REPORT[0] + "\n" + WARN_REPORT[3] + "\n")
    (f,) = tail.check_new().findings
    assert f.problem is Problem.WARNING
    assert f.line_no == 2


def test_marker_watch_reads_incrementally_and_catches_a_split_marker(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = MarkerWatch(log, "testbed-guest: sshd ready")
    assert not watch.seen(), "no file yet"
    log.write_bytes(b"[    2.1] testbed-guest: init reached\r\n[    2.4] testbed-guest: ss")
    assert not watch.seen()
    with log.open("ab") as f:
        f.write(b"hd ready\r\n")
    assert watch.seen(), "the marker arrived in two writes"
    log.write_bytes(b"")  # whatever happens to the file later, once seen stays seen
    assert watch.seen()


def test_marker_watch_does_not_match_a_prefix(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"testbed-guest: rea")
    watch = MarkerWatch(log, "testbed-guest: ready")
    assert not watch.seen()
    with log.open("ab") as f:
        f.write(b"son unknown\n")
    assert not watch.seen()


def test_marker_times_are_the_printk_stamps_of_the_testbed_lines() -> None:
    from testbed.guest.console import marker_times

    text = (
        "[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@...)\r\n"
        "[    1.719487] testbed-guest: init reached\r\n"
        "not a printk line: testbed-guest: ready\n"
        "[    2.291509] testbed-guest: ready\n"
        "[    2.300000] testbed-guest: command exited (e 0)\n"
        "[    9.000000] testbed-guest: ready\n"
    )
    assert marker_times(text) == {
        "init reached": 1.719487,
        "ready": 2.291509,  # the first one
        "command exited (e 0)": 2.3,
    }
