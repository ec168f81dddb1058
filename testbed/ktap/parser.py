"""Parse TAP 13 and KTAP v1 text into a :class:`~testbed.ktap.model.Suite`.

What it reads (Documentation/dev-tools/ktap.rst, and what kselftest_harness.h prints)::

    TAP version 13                      version line (KTAP version 1 / TAP version 13 / 14)
    1..58                               plan
    # Starting 58 tests from 4 test cases.
    #  RUN           hmm.hmm_device_private.open_close ...     diagnostics: attached to the
    #            OK  hmm.hmm_device_private.open_close          result that follows them
    ok 1 hmm.hmm_device_private.open_close
    ok 2 hmm.hmm_device_coherent.open_close # SKIP DEVICE_COHERENT not available
    not ok 3 name # TIMEOUT 30 seconds  /  ok 4 - name # TODO why
        KTAP version 1                  a nested suite: deeper indentation (any width),
        # Subtest: group                its own version, name, plan and results; the
        1..2                            parent's result line follows it
        ok 1 a
        ok 2 b
    ok 5 group
    Bail out! reason
    # Totals: pass:29 fail:0 ...        after the last result: the suite's trailer

It never raises on bad input: it reports. A result the plan promised and the stream never gave
(the guest crashed, the program was killed, the stream was cut) becomes a case with
``ok=None`` (:attr:`Status.ERROR`) whose reason says where the stream stopped, with whatever
followed the last result (a ``Segmentation fault``, an Oops) as its diagnostics. A last line
without its newline is a truncated line and is never taken as a result. Duplicated and
out-of-order numbers, results beyond the plan, a missing plan and a bail-out are
:class:`Problem` s of their suite. Lines that are not KTAP at all (kernel console messages
interleaved with the output) are kept as diagnostics of the result they precede, never dropped
and never mistaken for a result.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

from testbed.ktap.model import DIRECTIVES, Case, Problem, Suite

_VERSION = re.compile(r"^(K?TAP) version (\d+)$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#\s*(.*))?$")
_RESULT = re.compile(r"^(not ok|ok)(?=\s|$)(?:\s+(\d+)(?=\s|$))?(.*)$")
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(.*)$")
_BAIL = re.compile(r"^Bail out!\s*(.*)$")
#: a directive word after ``#``: SKIP (also "skipped"), TODO, XFAIL, ... (case-insensitive)
_DIRECTIVE = re.compile(
    r"^(" + "|".join(DIRECTIVES) + r"|SKIPPED)(?![A-Za-z0-9_])\s*(.*)$", re.IGNORECASE
)


class _Kind(enum.Enum):
    VERSION = "version"
    PLAN = "plan"
    RESULT = "result"
    SUBTEST = "subtest"
    BAIL = "bail"
    DIAG = "diagnostic"
    TEXT = "text"


#: kinds that belong to a level of nesting (their indentation decides which)
_STRUCTURAL = (_Kind.VERSION, _Kind.PLAN, _Kind.RESULT, _Kind.SUBTEST, _Kind.BAIL)


@dataclass(frozen=True)
class _Line:
    number: int  #: 1-based
    indent: int
    body: str  #: without the indentation and trailing white space
    kind: _Kind
    truncated: bool = False  #: the last line of a stream that did not end with a newline


def _classify(body: str) -> _Kind:
    if _RESULT.match(body):
        return _Kind.RESULT
    if _PLAN.match(body):
        return _Kind.PLAN
    if _VERSION.match(body):
        return _Kind.VERSION
    if _SUBTEST.match(body):
        return _Kind.SUBTEST
    if _BAIL.match(body):
        return _Kind.BAIL
    if body.startswith("#"):
        return _Kind.DIAG
    return _Kind.TEXT


def _lines(text: str) -> list[_Line]:
    raw = text.split("\n")
    complete = raw[-1] == ""
    if complete:
        raw.pop()
    out = []
    for i, text_line in enumerate(raw):
        expanded = text_line.rstrip("\r").expandtabs(8)
        body = expanded.strip()
        indent = len(expanded) - len(expanded.lstrip(" "))
        truncated = not complete and i == len(raw) - 1
        out.append(_Line(i + 1, indent, body, _classify(body), truncated))
    return out


def _diagnostic(line: _Line) -> str:
    """What a non-structural line contributes: ``# text`` -> ``text``; other text as is."""
    if line.kind is _Kind.DIAG:
        text = line.body[1:]
        return text[1:] if text.startswith(" ") else text
    return line.body


def _result(line: _Line, expected: int) -> Case:
    match = _RESULT.match(line.body)
    assert match is not None
    number = int(match.group(2)) if match.group(2) else expected
    rest = match.group(3)
    # the description ends at the first '#' that starts the line's rest or follows a space
    split = re.search(r"(?:^|\s)#", rest)
    desc, comment = (rest[: split.start()], rest[split.end() :]) if split else (rest, None)
    desc = desc.strip()
    if desc.startswith("- ") or desc == "-":
        desc = desc[1:].strip()
    directive: str | None = None
    reason = ""
    if comment is not None:
        comment = comment.strip()
        found = _DIRECTIVE.match(comment)
        if found:
            directive = found.group(1).upper()
            directive = "SKIP" if directive == "SKIPPED" else directive
            reason = found.group(2).strip()
        else:
            reason = comment
    return Case(
        number=number,
        name=desc,
        ok=match.group(1) == "ok",
        directive=directive,
        reason=reason,
        line=line.number,
    )


class _Reader:
    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.pos = 0

    def suite(self, indent: int, *, top: bool) -> Suite:
        """Read one level, starting at ``self.pos``, until a structural line of a shallower
        level (or the end). ``top``: nothing is shallower than the top level."""
        version = ""
        name = ""
        plan: int | None = None
        skip_reason: str | None = None
        bail: str | None = None
        results: list[Case] = []
        problems: list[Problem] = []
        pending: list[str] = []
        nested: Suite | None = None
        subtest_name = ""  # a '# Subtest:' line at this level names the nested block after it
        first_seen: dict[int, int] = {}
        expected = 1

        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if not line.body:
                self.pos += 1
                continue
            structural = line.kind in _STRUCTURAL and not line.truncated
            # A shallower KTAP line -- structural, or a '#' diagnostic such as KUnit's suite
            # totals -- is the parent's (typically its result line for this suite); other
            # shallower text (a kernel console line) is this level's diagnostic.
            shallower = structural or line.kind is _Kind.DIAG
            if shallower and line.indent < indent and not top:
                break
            if structural and line.indent > indent and (results or plan is not None or version):
                if nested is not None:
                    results.append(self._orphan(nested, expected, pending, "the next subtests"))
                    problems.append(
                        Problem(line.number, f"subtests {nested.name!r} have no result line")
                    )
                    first_seen.setdefault(expected, line.number)
                    expected += 1
                    pending = []
                nested = self.suite(line.indent, top=False)
                if not nested.name and subtest_name:
                    nested = dataclasses.replace(nested, name=subtest_name)
                subtest_name = ""
                continue
            self.pos += 1
            if line.truncated:
                problems.append(
                    Problem(line.number, f"truncated last line (no newline): {line.body!r}")
                )
                pending.append(line.body)
                continue
            if line.kind is _Kind.VERSION:
                if version or results or plan is not None:
                    problems.append(Problem(line.number, f"unexpected {line.body!r}"))
                else:
                    version = line.body
            elif line.kind is _Kind.SUBTEST:
                match = _SUBTEST.match(line.body)
                assert match is not None
                if results or plan is not None:
                    subtest_name = match.group(1).strip()  # names a nested block to come
                else:
                    name = match.group(1).strip()
            elif line.kind is _Kind.PLAN:
                match = _PLAN.match(line.body)
                assert match is not None
                if plan is not None:
                    problems.append(Problem(line.number, f"a second plan {line.body!r}"))
                else:
                    plan = int(match.group(1))
                    comment = (match.group(2) or "").strip()
                    found = _DIRECTIVE.match(comment)
                    if found and found.group(1).upper().startswith("SKIP"):
                        skip_reason = found.group(2).strip()
            elif line.kind is _Kind.BAIL:
                match = _BAIL.match(line.body)
                assert match is not None
                bail = match.group(1).strip()
                problems.append(Problem(line.number, f"bailed out: {bail}"))
            elif line.kind is _Kind.RESULT:
                case = _result(line, expected)
                case = dataclasses.replace(case, diagnostics=tuple(pending), subtests=nested)
                pending = []
                nested = None
                if case.number in first_seen:
                    problems.append(
                        Problem(
                            line.number,
                            f"duplicate test number {case.number} (first at line "
                            f"{first_seen[case.number]})",
                        )
                    )
                elif case.number != expected:
                    problems.append(
                        Problem(
                            line.number,
                            f"test number {case.number} out of order (expected {expected})",
                        )
                    )
                if plan is not None and case.number > plan:
                    problems.append(
                        Problem(line.number, f"test number {case.number} beyond the plan 1..{plan}")
                    )
                first_seen.setdefault(case.number, line.number)
                results.append(case)
                expected = case.number + 1
            else:
                pending.append(_diagnostic(line))

        if nested is not None:
            results.append(self._orphan(nested, expected, pending, "the end of the stream"))
            problems.append(Problem(0, f"subtests {nested.name!r} have no result line"))
            first_seen.setdefault(expected, 0)
            pending = []
        missing = [n for n in range(1, (plan or 0) + 1) if n not in first_seen]
        if missing:
            done = len(first_seen)
            stop = f"bailed out ({bail})" if bail is not None else "the stream ended"
            last = next((c for c in reversed(results) if c.line), None)
            where = (
                f"after test {last.number} (line {last.line})"
                if last is not None
                else "before the first result"
            )
            for k, number in enumerate(missing):
                results.append(
                    Case(
                        number=number,
                        name="",
                        ok=None,
                        reason=f"no result: {stop} {where}, {done} of {plan} results given",
                        # what followed the last result (a crash message) goes with the first
                        diagnostics=tuple(pending) if k == 0 else (),
                    )
                )
            pending = []
            problems.append(
                Problem(
                    0,
                    f"{len(missing)} of {plan} planned results missing "
                    f"({_ranges(missing)}): {stop} {where}",
                )
            )
        elif plan is None and results:
            problems.append(Problem(0, "no plan (1..N): cannot tell whether results are missing"))
        return Suite(
            results=tuple(results),
            plan=plan,
            name=name,
            version=version,
            skip_reason=skip_reason,
            bail_out=bail,
            trailer=tuple(pending),
            problems=tuple(problems),
        )

    @staticmethod
    def _orphan(nested: Suite, number: int, pending: list[str], before: str) -> Case:
        """A result for subtests whose parent result line never came."""
        return Case(
            number=number,
            name=nested.name,
            ok=None,
            reason=f"no result: {before} came before this test's result line",
            diagnostics=tuple(pending),
            subtests=nested,
        )


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if n is not None:
            start = prev = n
    return ", ".join(out)


def parse(text: str) -> Suite:
    """The :class:`Suite` ``text`` describes (see the module doc); never raises on content."""
    lines = _lines(text)
    first = next((ln for ln in lines if ln.kind in _STRUCTURAL), None)
    reader = _Reader(lines)
    return reader.suite(first.indent if first is not None else 0, top=True)
