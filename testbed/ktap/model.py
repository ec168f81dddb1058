"""What a KTAP / TAP stream says, as frozen dataclasses (data only; see :mod:`.parser`).

A stream is a :class:`Suite`: an optional version line, a plan (``1..N``) and the results in
the order they appeared, each a :class:`Case` that may carry a nested :class:`Suite` (its
subtests). Anything the stream got wrong -- a result missing against the plan, a duplicated or
out-of-order number, a truncated last line, a bail-out -- is a :class:`Problem` of the suite
it happened in, and a result the plan promised but the stream never gave is still a
:class:`Case`, with :attr:`Status.ERROR` and ``ok=None``: a crash mid-run is reported as the
tests it prevented, never as a shorter, green run.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


class Status(enum.Enum):
    """What a result means, from its ``ok``/``not ok`` and its directive."""

    PASS = "pass"  #: ``ok``, no directive (or ``# XPASS`` / ``# TODO`` that passed)
    FAIL = "fail"  #: ``not ok``, no directive
    SKIP = "skip"  #: ``# SKIP`` (``ok`` or ``not ok``)
    XFAIL = "xfail"  #: an expected failure: ``not ok ... # TODO`` or ``... # XFAIL``
    ERROR = "error"  #: ``# ERROR`` / ``# TIMEOUT``, or no result at all (``ok is None``)


#: directives a result line may carry after ``#`` (KTAP v1 and kselftest's XPASS)
DIRECTIVES = ("SKIP", "TODO", "XFAIL", "XPASS", "TIMEOUT", "ERROR")


def status_of(ok: bool | None, directive: str | None) -> Status:
    """The :class:`Status` of a result line (``ok`` None: no result line was seen)."""
    if ok is None or directive in ("ERROR", "TIMEOUT"):
        return Status.ERROR
    if directive == "SKIP":
        return Status.SKIP
    if directive in ("TODO", "XFAIL"):
        return Status.PASS if ok and directive == "TODO" else Status.XFAIL
    return Status.PASS if ok else Status.FAIL


@dataclass(frozen=True)
class Problem:
    """Something the stream got wrong, at ``line`` (1-based; 0 when it is about the end)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class Case:
    """One result line (``ok 3 name # SKIP reason``), or the absence of one the plan promised.

    ``diagnostics`` are the lines KTAP attaches to this result: the ``#`` lines (without the
    ``#`` and one space) and any other text (a kernel console line, a crash message; kept as
    it was) between the previous result of the same suite and this one.
    """

    number: int
    name: str
    ok: bool | None  #: None: the stream never gave this result
    directive: str | None = None  #: one of :data:`DIRECTIVES`, upper case
    reason: str = ""  #: the text after the directive (or after ``#`` with none)
    diagnostics: tuple[str, ...] = ()
    subtests: Suite | None = None
    line: int = field(default=0, compare=False)  #: where the result line was (0: none)

    @property
    def status(self) -> Status:
        return status_of(self.ok, self.directive)


@dataclass(frozen=True)
class Suite:
    """One level of a stream: a plan and its results (the top level, or a case's subtests)."""

    results: tuple[Case, ...]
    plan: int | None = None  #: N of ``1..N``; None when the stream gave no plan
    name: str = ""  #: ``# Subtest: name`` (nested suites), else empty
    version: str = ""  #: ``KTAP version 1`` / ``TAP version 13`` as written; empty if absent
    skip_reason: str | None = None  #: ``1..0 # SKIP reason``: the whole suite skipped
    bail_out: str | None = None  #: the reason of ``Bail out! reason``
    trailer: tuple[str, ...] = ()  #: lines after the last result (totals, crash text)
    problems: tuple[Problem, ...] = ()

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Case]]:
        """Every case, depth first, each with its dotted path of parent names."""
        for case in self.results:
            path = f"{prefix}{case.name}"
            yield path, case
            if case.subtests is not None:
                yield from case.subtests.walk(f"{path}.")

    def all_problems(self) -> list[Problem]:
        """This suite's problems and those of every nested suite."""
        found = list(self.problems)
        for case in self.results:
            if case.subtests is not None:
                found += case.subtests.all_problems()
        return found

    def counts(self) -> dict[Status, int]:
        """How many results of this level have each status (nested levels not counted)."""
        out = dict.fromkeys(Status, 0)
        for case in self.results:
            out[case.status] += 1
        return out

    def find(self, name: str) -> Case | None:
        """The first result of this level named ``name``."""
        return next((c for c in self.results if c.name == name), None)

    @property
    def ok(self) -> bool:
        """No failure, no error, no problem at any level."""
        bad = (Status.FAIL, Status.ERROR)
        return not self.all_problems() and not any(c.status in bad for _, c in self.walk())
