"""JUnit XML (what ``testbed run --junit`` writes) to per-test outcomes, and repeats to rates.

A test is named by its pytest node id, ``tests/p2p/test_claims.py::test_claim4_x``, rebuilt
from the JUnit ``classname`` and ``name`` (``tests.p2p.test_claims`` + ``test_claim4_x``), so
the same test has the same name in every run and on every kernel. pytest writes a second
``<testcase>`` for a test whose teardown errored after its call failed: one test, one outcome,
the worst (error > failed > skipped > passed).

A run's failures keep their text (the assertion, the traceback, captured output), shortened
to :data:`OUTPUT_LIMIT` characters: ``testbed bisect`` prints the failing test's output.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError

OUTPUT_LIMIT = 6000


class RegressError(TestbedError):
    """A comparison or bisection cannot go on: a run reported nothing, a prefix does not
    build, the selection matches no test (the message names the file or the option)."""


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  #: set-up or teardown broke: counted as a failure
    SKIPPED = "skipped"

    @property
    def rank(self) -> int:
        """Which outcome wins when one test reports twice: error > failed > skipped > passed."""
        return _RANK[self]

    @property
    def broke(self) -> bool:
        """A failure or an error: what counts against a test."""
        return self in (Outcome.FAILED, Outcome.ERROR)


_RANK = {Outcome.PASSED: 0, Outcome.SKIPPED: 1, Outcome.FAILED: 2, Outcome.ERROR: 3}


@dataclass(frozen=True)
class CaseResult:
    """One test in one run."""

    test: str  #: the pytest node id
    outcome: Outcome
    seconds: float
    message: str = ""  #: the failure's or skip's one-line message
    output: str = ""  #: failure text and captured output, shortened


def node_id(classname: str, name: str) -> str:
    """``tests.p2p.test_claims`` + ``test_x`` -> ``tests/p2p/test_claims.py::test_x``; a
    classname that is not a Python module path (``hmm-tests``) is kept: ``hmm-tests::x``."""
    if not classname:
        return name
    if all(part.isidentifier() for part in classname.split(".")):
        return f"{classname.replace('.', '/')}.py::{name}"
    return f"{classname}::{name}"


def short(test: str) -> str:
    """``tests/p2p/test_claims.py::test_x[default]`` -> ``test_x[default]``."""
    return test.rsplit("::", 1)[-1]


def _shorten(text: str) -> str:
    text = text.strip()
    if len(text) <= OUTPUT_LIMIT:
        return text
    half = OUTPUT_LIMIT // 2
    return (
        f"{text[:half]}\n[... {len(text) - OUTPUT_LIMIT} characters left out ...]\n{text[-half:]}"
    )


def _case(element: ET.Element) -> CaseResult:
    test = node_id(element.get("classname", ""), element.get("name", ""))
    try:
        seconds = float(element.get("time", "0") or 0)
    except ValueError:
        seconds = 0.0
    outcome, message, parts = Outcome.PASSED, "", []
    for tag, kind in (
        ("error", Outcome.ERROR),
        ("failure", Outcome.FAILED),
        ("skipped", Outcome.SKIPPED),
    ):
        found = element.find(tag)
        if found is not None:
            outcome, message = kind, found.get("message", "")
            parts.append(found.text or "")
            break
    if outcome in (Outcome.FAILED, Outcome.ERROR):
        for tag in ("system-out", "system-err"):
            for found in element.findall(tag):
                if found.text and found.text.strip():
                    parts.append(f"--- {tag} ---\n{found.text}")
    return CaseResult(test, outcome, seconds, message.strip(), _shorten("\n".join(parts)))


def merge_cases(cases: Iterable[CaseResult]) -> dict[str, CaseResult]:
    """One result per test: the worst of its ``<testcase>`` entries, their times summed."""
    out: dict[str, CaseResult] = {}
    for case in cases:
        seen = out.get(case.test)
        if seen is None:
            out[case.test] = case
            continue
        worst = case if case.outcome.rank > seen.outcome.rank else seen
        out[case.test] = CaseResult(
            case.test, worst.outcome, seen.seconds + case.seconds, worst.message, worst.output
        )
    return out


def parse_junit_text(text: str, where: str | Path) -> dict[str, CaseResult]:
    """The tests of one JUnit document; malformed XML is a :class:`RegressError`."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise RegressError(f"{where}: not JUnit XML ({exc})") from exc
    return merge_cases(_case(e) for e in root.iter("testcase"))


def parse_junit(path: Path) -> dict[str, CaseResult]:
    """The tests of the JUnit file ``path``; a missing or malformed file is a
    :class:`RegressError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegressError(f"{path}: no JUnit results ({exc.strerror})") from exc
    return parse_junit_text(text, path)


class State(enum.Enum):
    """What N runs of one test say, judged on the runs that were not skipped."""

    PASS = "pass"  #: never failed (and ran at least once)
    FAIL = "fail"  #: failed every time it ran
    FLAKY = "flaky"  #: failed some of the time
    SKIP = "skip"  #: skipped every time
    ABSENT = "absent"  #: not in any run (collected on one side only, or every run broke)


@dataclass(frozen=True)
class Rates:
    """One test's outcomes over the repeats of one side."""

    runs: int = 0
    passed: int = 0
    failed: int = 0  #: failures and errors
    skipped: int = 0

    @property
    def state(self) -> State:
        ran = self.passed + self.failed
        if self.runs == 0:
            return State.ABSENT
        if ran == 0:
            return State.SKIP
        if self.failed == 0:
            return State.PASS
        if self.passed == 0:
            return State.FAIL
        return State.FLAKY

    def rate(self) -> str:
        """``2/3 failed``, ``0/3 failed``, ``3/3 skipped``, ``absent``."""
        if self.runs == 0:
            return "absent"
        if self.passed + self.failed == 0:
            return f"{self.skipped}/{self.runs} skipped"
        text = f"{self.failed}/{self.passed + self.failed} failed"
        return text + (f" ({self.skipped} skipped)" if self.skipped else "")

    def add(self, outcome: Outcome) -> Rates:
        return Rates(
            self.runs + 1,
            self.passed + (outcome is Outcome.PASSED),
            self.failed + outcome.broke,
            self.skipped + (outcome is Outcome.SKIPPED),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "runs": self.runs,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "state": self.state.value,
        }


def rates(runs: Sequence[dict[str, CaseResult]]) -> dict[str, Rates]:
    """Each test's rates over ``runs`` (one dict per repeat), in first-seen order."""
    out: dict[str, Rates] = {}
    for run in runs:
        for test, case in run.items():
            out[test] = out.get(test, Rates()).add(case.outcome)
    return out


def merged_junit(files: Sequence[Path], label: str) -> str:
    """One JUnit document for one side: each repeat's ``<testsuite>`` renamed
    ``<label> run i/N`` under one ``<testsuites>`` (counts kept; nothing is dropped). A file
    that is missing or malformed becomes an empty suite carrying a ``<properties>`` note."""
    root = ET.Element("testsuites", {"name": label})
    for i, path in enumerate(files, start=1):
        name = f"{label} run {i}/{len(files)}" if len(files) > 1 else label
        try:
            doc = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            suite = ET.SubElement(root, "testsuite", {"name": name, "tests": "0"})
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", {"name": "no-results", "value": f"{path}: {exc}"})
            continue
        suites = [doc] if doc.tag == "testsuite" else list(doc.iter("testsuite"))
        for suite in suites:
            suite.set("name", name)
            root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
