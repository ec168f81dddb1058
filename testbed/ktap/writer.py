"""Write a :class:`~testbed.ktap.model.Suite` as KTAP v1 text (``testbed run --ktap FILE``).

The output follows Documentation/dev-tools/ktap.rst: ``KTAP version 1``, the plan, and per
result its diagnostics (``# text``), its subtests (indented four spaces, with their own version
line, ``# Subtest: name`` and plan) and its result line. A result the stream never gave
(``ok=None``) is written ``not ok N name # ERROR reason``: KTAP has no "no result", and a
consumer must not count it as run. :func:`testbed.ktap.parse` reads the output back into an
equal suite (the round trip is unit-tested).
"""

from __future__ import annotations

from testbed.ktap.model import Case, Suite

INDENT = "    "


def _clean(text: str) -> str:
    """One line of text: a newline would start a new (mis-parsed) line."""
    return " ".join(text.splitlines()).strip()


def _diag(pad: str, text: str) -> str:
    """``# text`` (leading blanks kept: the parser gives them back)."""
    return f"{pad}# {' '.join(text.splitlines())}".rstrip()


def _result_line(case: Case) -> str:
    # '#' in a name would start the directive: KTAP names may not contain it
    name = _clean(case.name).replace("#", "_")
    head = f"{'ok' if case.ok else 'not ok'} {case.number}"
    line = f"{head} {name}" if name else head
    directive = case.directive if case.ok is not None else "ERROR"
    reason = _clean(case.reason)
    if directive:
        line += f" # {directive}" + (f" {reason}" if reason else "")
    elif reason:
        line += f" # {reason}"
    return line


def _lines(suite: Suite, depth: int) -> list[str]:
    pad = INDENT * depth
    out = [f"{pad}KTAP version 1"]
    if suite.name:
        out.append(f"{pad}# Subtest: {_clean(suite.name)}")
    plan = f"{pad}1..{suite.plan if suite.plan is not None else len(suite.results)}"
    if suite.skip_reason is not None:
        plan += f" # SKIP {_clean(suite.skip_reason)}".rstrip()
    out.append(plan)
    for case in suite.results:
        out += [_diag(pad, d) for d in case.diagnostics]
        if case.subtests is not None:
            out += _lines(case.subtests, depth + 1)
        out.append(pad + _result_line(case))
    if suite.bail_out is not None:
        out.append(f"{pad}Bail out! {_clean(suite.bail_out)}".rstrip())
    out += [_diag(pad, t) for t in suite.trailer]
    return out


def dump(suite: Suite) -> str:
    """``suite`` as KTAP v1 text, ending with a newline."""
    return "\n".join(_lines(suite, 0)) + "\n"
