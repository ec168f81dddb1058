"""The binary search over a series' prefixes, against an oracle; and what a patch says of itself.

Prefix ``k`` of an ``n``-patch series is the base plus its first ``k`` patches (prefix 0: the
base alone). The oracle runs the selection on a prefix and says :class:`Verdict` pass, fail or
flaky. :func:`bisect` first checks both ends -- the base must pass and the full series must
fail, else there is nothing to find and it says which end is wrong -- then halves
``(last good, first bad]`` until one patch is left. A flaky prefix stops the search: it is
reported with the interval still open, never guessed at (rerun with more ``--repeat``).

For ``n`` patches it asks the oracle about at most ``2 + ceil(log2 n)`` prefixes; the ends
first, so the base (usually cached) and the full series answer the "is there anything to
bisect" question before any intermediate prefix is built.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from testbed.kernel.series import Patch, diff_lines, header_path
from testbed.regress.results import Rates, RegressError, State


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    FLAKY = "flaky"


class Outcome(enum.Enum):
    CULPRIT = "culprit"  #: the first patch at which the selection fails
    BASE_FAILS = "base-fails"  #: the base already fails: the series is not to blame
    FULL_PASSES = "full-passes"  #: the full series passes: nothing to bisect
    FLAKY = "flaky"  #: a prefix was flaky: undecided


@dataclass(frozen=True)
class Step:
    prefix: int
    verdict: Verdict


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    patches: int  #: n, the series' length
    steps: tuple[Step, ...]  #: every oracle call, in order
    good: int  #: the highest prefix known to pass (-1: none)
    bad: int | None  #: the lowest prefix known to fail (None: none)
    culprit: int | None = None  #: 1-based patch number when ``outcome`` is CULPRIT
    flaky: int | None = None  #: the flaky prefix when ``outcome`` is FLAKY


def bisect(patches: int, oracle: Callable[[int], Verdict]) -> Result:
    """Search prefixes ``0..patches`` for the first failing one (see the module doc)."""
    if patches < 1:
        raise ValueError("a series has at least one patch")
    steps: list[Step] = []

    def ask(prefix: int) -> Verdict:
        verdict = oracle(prefix)
        steps.append(Step(prefix, verdict))
        return verdict

    def done(outcome: Outcome, good: int, bad: int | None, **kw: int) -> Result:
        return Result(outcome, patches, tuple(steps), good, bad, **kw)

    base = ask(0)
    if base is Verdict.FLAKY:
        return done(Outcome.FLAKY, -1, None, flaky=0)
    if base is Verdict.FAIL:
        return done(Outcome.BASE_FAILS, -1, 0)
    full = ask(patches)
    if full is Verdict.FLAKY:
        return done(Outcome.FLAKY, 0, None, flaky=patches)
    if full is Verdict.PASS:
        return done(Outcome.FULL_PASSES, patches, None)
    good, bad = 0, patches
    while bad - good > 1:
        mid = (good + bad) // 2
        verdict = ask(mid)
        if verdict is Verdict.FLAKY:
            return done(Outcome.FLAKY, good, bad, flaky=mid)
        if verdict is Verdict.PASS:
            good = mid
        else:
            bad = mid
    return done(Outcome.CULPRIT, good, bad, culprit=bad)


# -- what a patch says of itself ------------------------------------------------------------

_SUBJECT_PREFIX = re.compile(r"^\[[^\]]*\]\s*")


def subject(patch: Patch) -> str:
    """The ``Subject:`` of a ``git format-patch`` file, unfolded, without its ``[PATCH ...]``
    tag; the file name when it has none."""
    lines = patch.data.decode("utf-8", "replace").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Subject:"):
            text = line[len("Subject:") :].strip()
            for more in lines[i + 1 :]:
                if not more.startswith((" ", "\t")):
                    break
                text += " " + more.strip()
            return _SUBJECT_PREFIX.sub("", text)
        if line.startswith(("diff ", "--- ")):
            break
    return patch.name


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int
    removed: int


def diffstat(patch: Patch) -> tuple[FileStat, ...]:
    """Lines added and removed per file, counted from the hunks themselves (not from the
    stat ``git format-patch`` writes above the diff, which a hand edit leaves stale)."""
    stats: list[FileStat] = []
    current: str | None = None
    old_name: str | None = None
    added = removed = 0
    for kind, line in diff_lines(patch.data.decode("utf-8", "replace")):
        if kind == "+":
            added += 1
        elif kind == "-":
            removed += 1
        elif kind == "header" and line.startswith("--- "):
            old_name = header_path(line, patch.strip)
        elif kind == "header" and line.startswith("+++ "):
            if current is not None:
                stats.append(FileStat(current, added, removed))
            current, added, removed = header_path(line, patch.strip) or old_name or "?", 0, 0
    if current is not None:
        stats.append(FileStat(current, added, removed))
    return tuple(stats)


def format_diffstat(stats: tuple[FileStat, ...]) -> str:
    """`` mm/memory.c | 11 +++++++++--`` lines and the total, as ``git diff --stat``."""
    if not stats:
        return " (no changes)"
    width = max(len(s.path) for s in stats)
    lines = [
        f" {s.path.ljust(width)} | {s.added + s.removed:3d} {'+' * s.added}{'-' * s.removed}"
        for s in stats
    ]
    plus, minus = sum(s.added for s in stats), sum(s.removed for s in stats)
    files = f"{len(stats)} file{'s' if len(stats) > 1 else ''} changed"
    insertions = f"{plus} insertion{'s' if plus != 1 else ''}(+)"
    deletions = f"{minus} deletion{'s' if minus != 1 else ''}(-)"
    lines.append(f" {files}, {insertions}, {deletions}")
    return "\n".join(lines)


def judge(rates: Mapping[str, Rates]) -> Verdict:
    """A prefix's verdict from the selection's rates on it: FAIL when some test failed every
    run, else FLAKY when some test failed some runs, else PASS (skips do not count). A
    deterministic failure decides even beside a flaky test: it is what bisect looks for."""
    if not rates:
        raise RegressError("the selection ran no tests; check --test (a pytest -k expression)")
    states = {r.state for r in rates.values()}
    if State.FAIL in states:
        return Verdict.FAIL
    if State.FLAKY in states:
        return Verdict.FLAKY
    return Verdict.PASS
