"""Base vs patched, per test: what the series changed.

Each side ran the same selection N times (``--repeat N``); each test's outcomes on a side are
:class:`~testbed.regress.results.Rates` and a :class:`~testbed.regress.results.State` (pass:
0/N failed, fail: N/N, flaky: anything in between, skip, absent). The verdict per test:

========================  =============================================================
``regression``            pass on base, fail on patched -- the only verdict that fails
``fix``                   fail on base, pass on patched
``unchanged``             the same state on both sides (pass, fail or skip)
``flaky``                 flaky on either side: reported with both rates, never a
                          regression (run more repeats to decide)
``skip-change``           skipped on one side only (``pass->skip``, ``skip->fail``, ...)
``new`` / ``gone``        only on patched / only on base (collected on one side)
========================  =============================================================

Exit codes (:func:`exit_code`): 0 no regression; 1 at least one regression; 3 no regression
but incomplete -- a run of either side reported no results (crashed, timed out, collected
nothing); 2 is the CLI's for an error before any comparison (a kernel that does not build, a
bad option); 128+N interrupted by signal N.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from testbed.regress.results import Rates, State, short

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_INCOMPLETE = 3
#: the JSON summary's ``schema``; bump when a key changes meaning or goes away
SCHEMA = "p2p-testbed/regress/1"


class Change(enum.Enum):
    REGRESSION = "regression"
    FIX = "fix"
    UNCHANGED = "unchanged"
    FLAKY = "flaky"
    SKIP_CHANGE = "skip-change"
    NEW = "new"
    GONE = "gone"


#: table order: what needs attention first
ORDER = (
    Change.REGRESSION,
    Change.FLAKY,
    Change.FIX,
    Change.SKIP_CHANGE,
    Change.NEW,
    Change.GONE,
    Change.UNCHANGED,
)


@dataclass(frozen=True)
class Row:
    test: str
    change: Change
    base: Rates
    patched: Rates

    @property
    def transition(self) -> str:
        """``pass->fail``, ``flaky->pass``, ..."""
        return f"{self.base.state.value}->{self.patched.state.value}"


def classify(base: Rates, patched: Rates) -> Change:
    """The verdict for one test from its rates on both sides (see the module doc)."""
    b, p = base.state, patched.state
    if b is State.ABSENT:
        return Change.NEW
    if p is State.ABSENT:
        return Change.GONE
    if State.FLAKY in (b, p):
        return Change.FLAKY
    if b is p:
        return Change.UNCHANGED
    if State.SKIP in (b, p):
        return Change.SKIP_CHANGE
    return Change.REGRESSION if (b, p) == (State.PASS, State.FAIL) else Change.FIX


def compare(base: dict[str, Rates], patched: dict[str, Rates]) -> list[Row]:
    """One row per test seen on either side, in :data:`ORDER`, then base's test order."""
    tests = list(dict.fromkeys([*base, *patched]))
    rows = [
        Row(t, classify(base.get(t, Rates()), patched.get(t, Rates())), *_pair(base, patched, t))
        for t in tests
    ]
    return sorted(rows, key=lambda r: ORDER.index(r.change))


def _pair(base: dict[str, Rates], patched: dict[str, Rates], test: str) -> tuple[Rates, Rates]:
    return base.get(test, Rates()), patched.get(test, Rates())


def counts(rows: Sequence[Row]) -> dict[str, int]:
    """How many tests got each verdict (every verdict listed, zeros included)."""
    return {c.value: sum(r.change is c for r in rows) for c in ORDER}


def exit_code(rows: Sequence[Row], complete: bool) -> int:
    if any(r.change is Change.REGRESSION for r in rows):
        return EXIT_REGRESSION
    return EXIT_OK if complete else EXIT_INCOMPLETE


def table(rows: Sequence[Row], base_label: str, patched_label: str) -> str:
    """verdict, test, transition and both sides' rates; then a summary line."""
    head = ("verdict", "test", "change", base_label, patched_label)
    cells = [
        (
            r.change.value.upper() if r.change is Change.REGRESSION else r.change.value,
            short(r.test),
            r.transition,
            r.base.rate(),
            r.patched.rate(),
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(head), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    n = counts(rows)
    out.append(", ".join(f"{v} {k}" for k, v in n.items() if v or k == "regression"))
    return "\n".join(out)


def summary(
    rows: Sequence[Row],
    *,
    sides: dict[str, dict[str, object]],
    repeat: int,
    selection: dict[str, object],
    complete: bool,
    wall_seconds: float,
) -> dict[str, object]:
    """The machine-readable summary (``--json FILE``); its keys:

    - ``schema``: :data:`SCHEMA`;
    - ``exit_code``: as the command exits (see the module doc); ``complete``: every run of
      both sides reported results;
    - ``counts``: verdict -> number of tests (every verdict present);
    - ``tests``: one object per test: ``test`` (node id), ``verdict``, ``change``
      (``pass->fail``), ``base`` and ``patched``: ``runs``, ``passed``, ``failed`` (errors
      included), ``skipped``, ``state``;
    - ``base``, ``patched``: the side's ``kernel`` (label and release), ``built`` (true: built
      now, false: taken from the cache), ``junit`` (the merged file), ``runs``: per repeat
      ``junit``, ``artifacts``, ``exit``, ``seconds``, ``note``;
    - ``repeat``, ``selection`` (``keyword``, ``machine``, ``run_args``), ``wall_seconds``.
    """
    return {
        "schema": SCHEMA,
        "exit_code": exit_code(rows, complete),
        "complete": complete,
        "counts": counts(rows),
        "tests": [
            {
                "test": r.test,
                "verdict": r.change.value,
                "change": r.transition,
                "base": r.base.as_json(),
                "patched": r.patched.as_json(),
            }
            for r in rows
        ],
        **sides,
        "repeat": repeat,
        "selection": selection,
        "wall_seconds": round(wall_seconds, 1),
    }
