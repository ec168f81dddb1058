"""Guest health from the serial console: find the kernel's own problem reports.

QEMU captures the guest's ``ttyS0`` to ``console.log``. This module finds in that text the
reports a kernel developer stops at -- panic, Oops, ``BUG()``, ``WARN()``, KASAN, UBSAN,
hung task, RCU stall, soft and hard lockup, kmemleak, lockdep, and the testbed's own P2P
drivers' ``P2P-WARN:`` lines (a contract breach they saw) -- and returns each as a
:class:`Finding` that carries the report's own lines, so a failing test shows the evidence.

The text
    Kernel lines carry the ``printk.time=1`` prefix ``[    1.234567] `` (and, with
    ``CONFIG_PRINTK_CALLER``, ``[    T1]`` after it); the serial driver ends them with
    CR LF. Userspace -- busybox init, scripts writing to ``/dev/console`` -- adds lines
    without a prefix, sometimes coloured with ANSI escapes, and a kernel line may begin in
    the middle of a userspace line that had no newline yet (``login: [   12.3] BUG: ...``).
    So each line is cleaned (CR, ANSI sequences, other control characters), its first
    printk prefix is looked for wherever it sits, and the formats below are matched against
    the message after it. When the text has prefixes at all, a line without one is
    userspace and never a report, whatever it says; only a log with no prefix anywhere
    (``printk.time=0``) is matched line by line as it is. ``dmesg`` output works the same.

Recognising a report
    By the kernel's own format strings, anchored at the start of the message, never by a
    loose word: ``WARNING: CPU: 0 PID: 1 at ...`` is a warning; ``Spectre V2 : WARNING:
    Unprivileged eBPF is enabled ...``, ``RETBleed: WARNING: ...`` and the taint notices of
    an out-of-tree module are not. The formats are those of Linux 6.1, the guest kernel,
    checked against the strings in its vmlinux and the upstream functions named next to
    :data:`_KINDS`; shapes that changed later (``Oops: general protection fault`` in 6.9,
    UBSAN's ``cut here`` framing in 6.6, ``watchdog: CPU1: Watchdog detected hard LOCKUP``
    in 6.5) are accepted too. Each report is one finding, classified by its most specific
    line:

    * ``BUG: KASAN: ...`` is KASAN; ``BUG: sleeping function called from invalid
      context`` and lockdep's ``WARNING: possible circular locking dependency detected``
      (and its siblings) are LOCKDEP -- not also a BUG or a WARNING.
    * x86's page-fault prelude (``BUG: kernel NULL pointer dereference, address: ...``,
      ``BUG: unable to handle page fault for address: ...``) and the ``Oops: 0002 [#1]``
      die line under it are one OOPS, headed by the prelude because it names the address.
    * ``kernel BUG at file:line!`` and the ``invalid opcode: 0000 [#1]`` under it are one
      BUG. Any other ``BUG:`` line (scheduling while atomic, bad page state, KFENCE, ...)
      is a BUG of its own.
    * A die line saying ``general protection fault`` is GENERAL_PROTECTION; any other die
      line without a prelude is an OOPS.
    * A panic is always a finding of its own, also right after an Oops ("Fatal
      exception") or a lockup: the panic is what stopped the guest, the report before it
      says why.

Where an excerpt starts and ends
    It starts at the report's opening marker if it has one -- the ``------------[ cut here
    ]------------`` of ``WARN()`` and ``BUG()`` (a ``WARN(cond, fmt)`` message sits between
    it and the ``WARNING:`` line), or the ``=====`` rule just above KASAN, UBSAN (6.1) and
    lockdep headlines -- and at the headline otherwise. It ends at the report's end marker:
    ``---[ end trace ... ]---`` for warnings, BUGs and Oopses (the register summary x86
    repeats after it belongs to the *first* Oops of the boot and is left out), ``---[ end
    Kernel panic - not syncing: ... ]---``, or the closing ``=====`` of KASAN and UBSAN. A
    report without a marker (hung task, lockups, RCU stall, lockdep, other ``BUG:`` lines)
    ends with its call trace, at `` </TASK>``; a ``BUG:`` line with no trace under it is a
    report of one line, and so are kmemleak's summary (the objects are listed in
    ``/sys/kernel/debug/kmemleak``) and a ``P2P-WARN:`` line. Every excerpt also stops
    before the next report begins, at the end of the text (a panic stopped by pvpanic never
    prints its end marker), and after :data:`EXCERPT_LINES` lines.

:func:`check` scans a whole log; :class:`ConsoleTail` scans only what a running guest
appended since the last look, so each test of a long-lived guest is judged on its own
output; :func:`raise_for_problems` turns findings into :class:`~testbed.errors.GuestPanic`
or :class:`~testbed.errors.GuestUnhealthy`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import GuestPanic, GuestUnhealthy

__all__ = [
    "EXCERPT_LINES",
    "ConsoleTail",
    "Finding",
    "HealthReport",
    "Problem",
    "check",
    "raise_for_problems",
    "scan",
]

#: Most lines an excerpt keeps; a lockdep chain or a long trace is cut here.
EXCERPT_LINES = 60


class Problem(enum.Enum):
    """Kinds of kernel report; the value is what a person calls it."""

    PANIC = "kernel panic"
    OOPS = "kernel Oops"
    BUG = "kernel BUG"
    WARNING = "kernel warning"
    KASAN = "KASAN report"
    UBSAN = "UBSAN report"
    HUNG_TASK = "hung task"
    RCU_STALL = "RCU stall"
    SOFT_LOCKUP = "soft lockup"
    HARD_LOCKUP = "hard lockup"
    KMEMLEAK = "kmemleak leak report"
    LOCKDEP = "lockdep report"
    GENERAL_PROTECTION = "general protection fault"
    P2P_WARNING = "P2P driver warning"


@dataclass(frozen=True)
class Finding:
    """One kernel report found on the console.

    ``line_no`` counts lines of the scanned text from 1 (or from ``start_line``), split at
    ``\\n`` like ``grep -n`` and editors do. ``headline`` is that line without its printk
    prefix; ``excerpt`` is the whole report as printed (printk prefixes kept, CR and ANSI
    escapes removed), from its opening marker to its end (see the module docstring).
    """

    problem: Problem
    line_no: int
    timestamp: float | None
    headline: str
    excerpt: tuple[str, ...]


@dataclass(frozen=True)
class HealthReport:
    """All findings of one scan, in console order."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when the console shows no kernel problem at all."""
        return not self.findings

    def of(self, *problems: Problem) -> tuple[Finding, ...]:
        """The findings of the given kinds, in console order."""
        return tuple(f for f in self.findings if f.problem in problems)

    def summary(self) -> str:
        """A count line, then each finding: kind, line number, printk time, headline, and
        the excerpt indented under it. Meant to be the text of a test failure."""
        if not self.findings:
            return "no kernel problems"
        kinds: dict[str, int] = {}
        for f in self.findings:
            kinds[f.problem.value] = kinds.get(f.problem.value, 0) + 1
        counts = ", ".join(f"{n} {kind}" if n == 1 else f"{n}x {kind}" for kind, n in kinds.items())
        noun = "problem" if len(self.findings) == 1 else "problems"
        parts = [f"{len(self.findings)} kernel {noun}: {counts}"]
        for f in self.findings:
            when = f", t={f.timestamp:.6f}" if f.timestamp is not None else ""
            parts.append(f"--- {f.problem.value} at line {f.line_no}{when}: {f.headline}")
            parts.extend(f"    {line}" for line in f.excerpt)
        return "\n".join(parts)


# -- line cleaning ------------------------------------------------------------------------

# ANSI: CSI (colours, cursor moves), OSC (window titles), charset selection and the other
# two-byte escapes; then every C0 control except TAB (this takes the CR of CR LF too).
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[()][0-9A-Za-z]"
    r"|\x1b[@-Z\\-_]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# "[    1.234567] " and, with CONFIG_PRINTK_CALLER, "[    1.234567][    T1] ".
_PRINTK_PREFIX = re.compile(r"\[\s*(?P<ts>\d+\.\d+)\](?:\[\s*[TC]\d+\])? ?")


@dataclass(frozen=True)
class _Line:
    text: str  # the cleaned line, printk prefix kept
    body: str  # the message after the printk prefix (the whole line if it has none)
    timestamp: float | None


def _parse(raw: str) -> _Line:
    text = _CONTROL.sub("", _ANSI.sub("", raw))
    m = _PRINTK_PREFIX.search(text)
    if m is None:
        return _Line(text, text, None)
    return _Line(text, text[m.end() :], float(m.group("ts")))


# -- the kernel's formats -----------------------------------------------------------------


class _End(enum.Enum):
    """How a report is terminated once its headline is seen."""

    TRACE = enum.auto()  # "---[ end trace ... ]---" (print_oops_end_marker): WARN, BUG, Oops
    PANIC = enum.auto()  # "---[ end Kernel panic - not syncing: ... ]---"
    RULE = enum.auto()  # a closing "=====" rule: KASAN, UBSAN before 6.6
    STACK = enum.auto()  # the " </TASK>" of a dump_stack(): everything else with a trace
    LINE = enum.auto()  # the headline is the whole report: kmemleak's summary


class _Open(enum.Enum):
    """Which marker may open a report just before its headline."""

    NONE = enum.auto()
    CUT_HERE = enum.auto()  # "------------[ cut here ]------------", up to _LOOKBACK lines up
    RULE = enum.auto()  # a "=====" rule on the line right above
    EITHER = enum.auto()  # UBSAN: "=====" until 6.5, "cut here" since 6.6


@dataclass(frozen=True)
class _Kind:
    problem: Problem
    pattern: re.Pattern[str]
    opens: _Open
    end: _End
    absorbs_die: bool = False  # the "Oops: ..." die line that follows is part of this report


def _kind(
    problem: Problem, pattern: str, opens: _Open, end: _End, *, absorbs_die: bool = False
) -> _Kind:
    return _Kind(problem, re.compile(pattern), opens, end, absorbs_die)


# The x86 die line, "%s: %04lx [#%d]%s%s%s%s%s" in arch/x86/kernel/dumpstack.c
# __die_header() ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "invalid opcode: 0000 [#3] ...",
# "general protection fault, probably for non-canonical address 0x...: 0000 [#2] ..."),
# with "Oops: " in front of the others since 6.9; arm64's die() prints
# "Internal error: %s: %016lx [#%d]".
_DIE = r"^(?:Oops: |Internal error: )?.+?: [0-9a-f]{4,16} \[#\d+\]"
_GPF_DIE = r"^(?:Oops: )?general protection fault\b.*: [0-9a-f]{4} \[#\d+\]"

#: Every headline the scanner knows, most specific first: the first match classifies a
#: line. Comments name the upstream function that prints the format.
_KINDS: tuple[_Kind, ...] = (
    # kernel/panic.c panic()
    _kind(Problem.PANIC, r"^Kernel panic - not syncing: ", _Open.NONE, _End.PANIC),
    # mm/kasan/report.c print_error_description(), inside start_report()'s "=====" rule
    _kind(Problem.KASAN, r"^BUG: KASAN: ", _Open.RULE, _End.RULE),
    # kernel/watchdog.c watchdog_timer_fn(); "watchdog: " is its pr_fmt
    _kind(
        Problem.SOFT_LOCKUP,
        r"^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck for \d+s!",
        _Open.NONE,
        _End.STACK,
    ),
    # kernel/watchdog_hld.c watchdog_overflow_callback() ("NMI watchdog: "); since 6.5
    # kernel/watchdog.c watchdog_hardlockup_check() ("watchdog: CPU%u: ")
    _kind(
        Problem.HARD_LOCKUP,
        r"^(?:(?:NMI )?watchdog: (?:CPU\d+: )?)?Watchdog detected hard LOCKUP on cpu \d+",
        _Open.NONE,
        _End.STACK,
    ),
    # kernel/locking/lockdep.c (print_circular_bug_header() and friends, all opened by a
    # "=====" rule) and kernel/sched/core.c __might_resched()
    _kind(
        Problem.LOCKDEP,
        r"^(?:BUG: sleeping function called from invalid context"
        r"|BUG: MAX_\w+ too low!"
        r"|BUG: key \S+ has not been registered!"
        r"|BUG: looking up invalid subclass"
        r"|INFO: trying to register non-static key"
        r"|WARNING: (?:possible circular locking dependency detected"
        r"|possible recursive locking detected"
        r"|inconsistent lock state"
        r"|possible irq lock inversion dependency detected"
        r"|\S+-safe -> \S+-unsafe lock order detected"
        r"|bad unlock balance detected!"
        r"|bad contention detected!"
        r"|held lock freed!"
        r"|lock held when returning to user space!"
        r"|[Nn]ested lock was not taken"
        r"|suspicious RCU usage"
        r"|\S+/\d+ still has locks held!"
        r"|chain_key collision))",
        _Open.RULE,
        _End.STACK,
    ),
    # arch/x86/mm/fault.c show_fault_oops(), printed before the "Oops:" die line; the
    # "paging request"/"NULL pointer dereference at" spellings are from before 4.20
    _kind(
        Problem.OOPS,
        r"^BUG: (?:kernel NULL pointer dereference, address:"
        r"|unable to handle page fault for address:"
        r"|unable to handle kernel (?:paging request|NULL pointer dereference) at)",
        _Open.NONE,
        _End.TRACE,
        absorbs_die=True,
    ),
    # lib/bug.c report_bug() for BUG()/BUG_ON(), after CUT_HERE; x86 then dies with
    # "invalid opcode: 0000 [#1]"
    _kind(
        Problem.BUG,
        r"^kernel BUG at \S+:\d+!",
        _Open.CUT_HERE,
        _End.TRACE,
        absorbs_die=True,
    ),
    # kernel/panic.c __warn(), after CUT_HERE and the optional WARN(cond, fmt) message
    _kind(Problem.WARNING, r"^WARNING: CPU: \d+ PID: \d+ at \S", _Open.CUT_HERE, _End.TRACE),
    # lib/ubsan.c ubsan_prologue()
    _kind(Problem.UBSAN, r"^UBSAN: .+ in \S", _Open.EITHER, _End.RULE),
    # kernel/hung_task.c check_hung_task()
    _kind(
        Problem.HUNG_TASK,
        r"^INFO: task .+:\d+ blocked for more than \d+ seconds",
        _Open.NONE,
        _End.STACK,
    ),
    # kernel/rcu/tree_stall.h print_other_cpu_stall(), print_cpu_stall(),
    # synchronize_rcu_expedited_wait(); kernel/rcu/tasks.h for the RCU-tasks flavours.
    # The "rcu: " pr_fmt appeared in 4.19.
    _kind(
        Problem.RCU_STALL,
        r"^(?:rcu: )?INFO: \S+ (?:self-detected stall on CPU|detected (?:expedited )?stalls on)",
        _Open.NONE,
        _End.STACK,
    ),
    # the testbed's own P2P drivers (qemu-devices/p2p): a breach of the p2p_map/p2p_unmap
    # contract they saw, one pr_warn line "<module>: P2P-WARN: ..." (pr_fmt is the module)
    _kind(Problem.P2P_WARNING, r"^[\w.-]+: P2P-WARN: ", _Open.NONE, _End.LINE),
    # mm/kmemleak.c kmemleak_scan(); the objects themselves are in debugfs
    _kind(
        Problem.KMEMLEAK,
        r"^kmemleak: \d+ new suspected memory leaks?\b",
        _Open.NONE,
        _End.LINE,
    ),
    # any other "BUG: " line: scheduling while atomic, Bad page state, KFENCE, KCSAN, ...
    _kind(Problem.BUG, r"^BUG: \S", _Open.RULE, _End.STACK),
    # a die line without a prelude
    _kind(Problem.GENERAL_PROTECTION, _GPF_DIE, _Open.NONE, _End.TRACE),
    _kind(Problem.OOPS, _DIE, _Open.NONE, _End.TRACE),
)

_DIE_LINE = re.compile(_DIE)
_CUT_HERE = re.compile(r"^-+\[ cut here \]-+$")  # include/asm-generic/bug.h CUT_HERE
_RULE = re.compile(r"^={20,}$")  # KASAN 66, UBSAN 80, lockdep 54 '=' characters
_END_TRACE = re.compile(r"^---\[ end trace(?: [0-9a-f]+)? \]---")
_END_PANIC = re.compile(r"^---\[ end Kernel panic - not syncing: ")
_END_TASK = re.compile(r"^\s*</TASK>\s*$")
# A dump_stack() or task dump beginning: a marker-less report does have a trace coming.
_STACK_BEGINS = re.compile(r"^(?:Call Trace:|CPU: \d+ PID: \d+|stack backtrace:|task:\S)")
# Lines that continue a marker-less report that has no trace (RCU's per-CPU lines, ...).
_CONTINUATION = re.compile(r"^(?:\s|rcu: \s)")
# What may follow " </TASK>" within one RCU stall report: further CPUs, the GP kthread.
_RCU_MORE = re.compile(r"^(?:rcu: |NMI backtrace for cpu \d+|Sending NMI from CPU \d+)")

#: How far above its headline a "cut here" may be: a WARN(cond, fmt) message sits between.
_LOOKBACK = 10
#: How far below a page-fault prelude or "kernel BUG at" its die line may come.
_DIE_LOOKAHEAD = 12
#: How far below a marker-less headline its dump_stack() must begin to belong to it
#: (lockdep's "irq event stamp" lines and "Preemption disabled at:" come first).
_STACK_LOOKAHEAD = 12


def _classify(body: str) -> _Kind | None:
    for kind in _KINDS:
        if kind.pattern.match(body):
            return kind
    return None


def _report_begins(body: str) -> bool:
    return _CUT_HERE.match(body) is not None or _classify(body) is not None


def _opening(lines: Sequence[_Line], i: int, floor: int, kind: _Kind) -> tuple[int, _Open]:
    """Where the report headed at ``i`` starts, and by which marker."""
    rule_above = i - 1 >= floor and _RULE.match(lines[i - 1].body) is not None
    if kind.opens in (_Open.RULE, _Open.EITHER) and rule_above:
        return i - 1, _Open.RULE
    if kind.opens in (_Open.CUT_HERE, _Open.EITHER):
        for j in range(i - 1, max(floor, i - _LOOKBACK) - 1, -1):
            body = lines[j].body
            if _CUT_HERE.match(body):
                return j, _Open.CUT_HERE
            if _END_TRACE.match(body) or _END_TASK.match(body) or _classify(body):
                break  # another report ends or begins here: the marker is not ours
    return i, _Open.NONE


def _closing(lines: Sequence[_Line], i: int, last: int, kind: _Kind, opened: _Open) -> int:
    """Index of the last line of the report headed at ``i`` (``last`` at most)."""
    end = kind.end
    if opened is _Open.RULE and kind.problem is not Problem.LOCKDEP:
        end = _End.RULE  # KASAN, UBSAN, KFENCE, KCSAN: "=====" ... "====="
    elif opened is _Open.CUT_HERE and kind.problem is Problem.UBSAN:
        end = _End.TRACE  # 6.6+: CUT_HERE ... "---[ end trace ]---"
    if end is _End.LINE:
        return i
    if end is _End.STACK and kind.problem is not Problem.LOCKDEP:
        window = lines[i + 1 : min(last, i + _STACK_LOOKAHEAD) + 1]
        if not any(_STACK_BEGINS.match(line.body) for line in window):
            j = i  # no trace is coming: the headline and its indented continuation
            while j < last and _CONTINUATION.match(lines[j + 1].body):
                j += 1
            return j
    die_window = i + _DIE_LOOKAHEAD if kind.absorbs_die else i
    for j in range(i + 1, last + 1):
        body = lines[j].body
        if j <= die_window and _DIE_LINE.match(body):
            die_window = i  # the first die line is ours, any later one is not
            continue
        if end is _End.TRACE and _END_TRACE.match(body):
            return j
        if end is _End.PANIC and _END_PANIC.match(body):
            return j
        if end is _End.RULE and (_RULE.match(body) or _END_TRACE.match(body)):
            return j
        if end is _End.STACK and _END_TASK.match(body):
            more = j < last and _RCU_MORE.match(lines[j + 1].body)
            if not (kind.problem is Problem.RCU_STALL and more):
                return j
        if _report_begins(body):
            return j - 1  # the next report starts before this one said it ended
    return last


# -- public API ---------------------------------------------------------------------------


def scan(lines: Iterable[str], *, start_line: int = 1) -> list[Finding]:
    """Find the kernel reports in ``lines``, in order.

    ``lines`` are the console's lines, with or without their line ending; ``start_line``
    is the number of the first one. Use :func:`check` for a whole text (a bare ``str`` is
    refused here: iterating it would yield characters).

    If any line carries a printk time prefix, lines without one are userspace output and
    are never taken for a report (they still appear in excerpts). Only in a log with no
    prefix at all (``printk.time=0``) are all lines matched.
    """
    if isinstance(lines, str):
        raise TypeError("scan() takes lines; use check(text) for a whole console text")
    return _scan([_parse(line) for line in lines], start_line, kernel_only=None)


def _scan(parsed: list[_Line], start_line: int, *, kernel_only: bool | None) -> list[Finding]:
    if kernel_only is None:
        kernel_only = any(line.timestamp is not None for line in parsed)
    if kernel_only:  # blank out userspace lines for matching, keep them for excerpts
        parsed = [p if p.timestamp is not None else _Line(p.text, "", None) for p in parsed]
    findings: list[Finding] = []
    floor = 0  # an excerpt never reaches back into the previous one
    i = 0
    while i < len(parsed):
        kind = _classify(parsed[i].body)
        if kind is None:
            i += 1
            continue
        start, opened = _opening(parsed, i, floor, kind)
        last = min(len(parsed), start + EXCERPT_LINES) - 1
        end = _closing(parsed, i, last, kind, opened)
        findings.append(
            Finding(
                problem=kind.problem,
                line_no=start_line + i,
                timestamp=parsed[i].timestamp,
                headline=parsed[i].body.strip(),
                excerpt=tuple(line.text for line in parsed[start : end + 1]),
            )
        )
        floor = i = end + 1
    return findings


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def check(text_or_path: str | Path) -> HealthReport:
    """Scan a whole console log: a :class:`~pathlib.Path` is read, a ``str`` is the text.

    A ``str`` is never taken for a file name -- wrap paths in ``Path``. Lines are split at
    ``\\n`` only, so line numbers agree with ``grep -n`` and :class:`ConsoleTail`.
    """
    if isinstance(text_or_path, Path):
        # Bytes, not read_text(): universal newlines would turn a lone CR (a progress bar,
        # a terminal reset) into a line break and shift every line number after it.
        text = text_or_path.read_bytes().decode("utf-8", errors="replace")
    else:
        text = text_or_path
    return HealthReport(tuple(scan(_split(text))))


def raise_for_problems(
    report: HealthReport, *, allow: Iterable[Problem] = (), source: str = "console"
) -> None:
    """Raise if ``report`` has a finding whose kind is not in ``allow``.

    :class:`~testbed.errors.GuestPanic` if one of them is a panic, else
    :class:`~testbed.errors.GuestUnhealthy`; the message names ``source`` (say, the
    console log's path) and holds the :meth:`HealthReport.summary` of those findings only.
    """
    allowed = frozenset(allow)
    remaining = HealthReport(tuple(f for f in report.findings if f.problem not in allowed))
    if remaining.ok:
        return
    message = f"{source}: {remaining.summary()}"
    if remaining.of(Problem.PANIC):
        raise GuestPanic(message)
    raise GuestUnhealthy(message)


class ConsoleTail:
    """Incremental reader of a growing console log, so each test is judged on its own lines.

    ``mark()`` before a test, ``check_new()`` after it: only what the guest printed in
    between is scanned, and the findings' line numbers are those of the whole file.

    Only complete lines are scanned. A last line still without its newline is left for the
    next call rather than matched half-written; ``mark()`` stops before it too, so a report
    that was being printed at the mark is still caught. Once any line of the file has shown
    a printk time prefix, prefix-less lines of later chunks count as userspace output (see
    :func:`scan`). If the file shrinks (QEMU restarted and recreated it), reading starts
    again from its beginning; a recreated file that has already grown past the old offset
    cannot be told apart, so use one tail per QEMU run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0  # byte offset just after the last consumed "\n"
        self._lines = 0  # number of lines before _offset
        self._timestamped = False  # a printk prefix has been seen in the file

    def _read_from_offset(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, 2)
                if size < self._offset:
                    self._offset = self._lines = 0
                    self._timestamped = False
                f.seek(self._offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def _consume(self) -> tuple[list[_Line], int]:
        """Complete lines since the offset, parsed, and the number of the first; advance."""
        data = self._read_from_offset()
        chunk = data[: data.rfind(b"\n") + 1]
        first = self._lines + 1
        self._offset += len(chunk)
        self._lines += chunk.count(b"\n")
        parsed = [_parse(line) for line in _split(chunk.decode("utf-8", errors="replace"))]
        self._timestamped = self._timestamped or any(p.timestamp is not None for p in parsed)
        return parsed, first

    def mark(self) -> None:
        """Skip everything up to the end of the last complete line written so far."""
        self._consume()

    def read_new(self) -> str:
        """The text appended since the last mark or check, an incomplete last line
        included. Does not move the mark: use it to attach a test's console output."""
        return self._read_from_offset().decode("utf-8", errors="replace")

    def check_new(self) -> HealthReport:
        """Scan the complete lines appended since the last mark or check; move past them."""
        parsed, first = self._consume()
        return HealthReport(tuple(_scan(parsed, first, kernel_only=self._timestamped)))


class MarkerWatch:
    """Has the guest printed ``marker`` yet? Each look reads only what was appended since the
    last one, so a caller can poll a growing console log every few milliseconds."""

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self._needle = marker.encode()
        self._offset = 0
        self._carry = b""  # the end of what was read, in case the marker straddles two reads
        self._found = False

    def seen(self) -> bool:
        if self._found:
            return True
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return False
        self._offset += len(chunk)
        window = self._carry + chunk
        self._found = self._needle in window
        self._carry = window[len(window) - len(self._needle) + 1 :] if window else b""
        return self._found


def marker_times(text: str, prefix: str = "testbed-guest: ") -> dict[str, float]:
    """The guest's printk time stamp (seconds since the kernel's clock started) of each
    ``prefix`` line on the console, keyed by the rest of the line; the first occurrence wins.

    ``testbed bench`` places the guest's phases (kernel boot to init, init to the command)
    on the host's clock with them.
    """
    times: dict[str, float] = {}
    for raw in text.splitlines():
        line = _parse(raw)
        if line.timestamp is not None and line.body.startswith(prefix):
            times.setdefault(line.body[len(prefix) :].strip(), line.timestamp)
    return times
