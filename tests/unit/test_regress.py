"""``testbed regress``'s pure logic: JUnit to outcomes, repeats to rates, base vs patched.

Inputs: two JUnit files captured from real ``testbed run -k claim4`` runs, on ``base`` and on
the demo buggy series (``tests/data/regress/``), and small hand-written documents for what
those do not show (skips, set-up errors, a teardown error after a failure, flaky repeats).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.regress import results, verdict
from testbed.regress.results import Outcome, Rates, RegressError, State
from testbed.regress.verdict import Change

DATA = Path(__file__).resolve().parent.parent / "data" / "regress"
LAST_PAGE = (
    "tests/p2p/test_claims.py::"
    "test_claim4_evict_last_page_invalidates_its_importer_and_moves_the_cpu_mapping"
)


def junit(*cases: str) -> str:
    """A JUnit document with these ``<testcase>`` elements (classname tests.p2p.t)."""
    body = "".join(cases)
    return (
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>'
    )


def case(name: str, inner: str = "", time: float = 1.0) -> str:
    return f'<testcase classname="tests.p2p.t" name="{name}" time="{time}">{inner}</testcase>'


FAIL = '<failure message="AssertionError: boom">trace</failure>'
ERROR = '<error message="failed on setup">setup trace</error>'
SKIP = '<skipped type="pytest.skip" message="needs the switch">skip</skipped>'


def run_of(**outcomes: str) -> dict[str, results.CaseResult]:
    inner = {"pass": "", "fail": FAIL, "error": ERROR, "skip": SKIP}
    return results.parse_junit_text(
        junit(*(case(n, inner[o]) for n, o in outcomes.items())), "test"
    )


# -- JUnit ------------------------------------------------------------------------------------


def test_captured_runs_parse_with_node_ids_outcomes_and_the_failure_text() -> None:
    base = results.parse_junit(DATA / "claim4-base.xml")
    demo = results.parse_junit(DATA / "claim4-demo-buggy-unmap.xml")
    assert set(base) == set(demo) and len(base) == 3
    assert all(c.outcome is Outcome.PASSED for c in base.values())
    broken = demo[LAST_PAGE]
    assert broken.outcome is Outcome.FAILED
    assert "the zap missed the last page" in broken.message
    assert "AssertionError" in broken.output and broken.seconds > 0
    assert [c.outcome for t, c in demo.items() if t != LAST_PAGE] == [Outcome.PASSED] * 2


def test_a_teardown_error_after_a_failure_is_one_test_with_the_worst_outcome() -> None:
    cases = results.parse_junit_text(
        junit(case("test_a", FAIL, 2.0), case("test_a", ERROR, 0.5), case("test_b")), "x"
    )
    assert list(cases) == ["tests/p2p/t.py::test_a", "tests/p2p/t.py::test_b"]
    a = cases["tests/p2p/t.py::test_a"]
    assert a.outcome is Outcome.ERROR and a.seconds == 2.5 and a.message == "failed on setup"


def test_skips_and_parametrized_names_keep_their_ids() -> None:
    cases = results.parse_junit_text(junit(case("test_u[switch]", SKIP)), "x")
    (only,) = cases.values()
    assert only.test == "tests/p2p/t.py::test_u[switch]" and only.outcome is Outcome.SKIPPED
    assert only.message == "needs the switch" and only.output == "skip"
    assert results.short(only.test) == "test_u[switch]"


def test_missing_or_malformed_junit_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(RegressError, match=r"nope\.xml"):
        results.parse_junit(tmp_path / "nope.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testsuite>")
    with pytest.raises(RegressError, match=r"bad\.xml: not JUnit XML"):
        results.parse_junit(bad)


def test_long_failure_output_is_shortened_from_the_middle() -> None:
    text = "A" * 5000 + "B" * 5000
    cases = results.parse_junit_text(
        junit(case("t", f'<failure message="m">{text}</failure>')), "x"
    )
    out = cases["tests/p2p/t.py::t"].output
    assert len(out) < results.OUTPUT_LIMIT + 100 and out.startswith("A") and out.endswith("B")
    assert "characters left out" in out


def test_merged_junit_keeps_every_repeat_as_its_own_suite(tmp_path: Path) -> None:
    files = [DATA / "claim4-base.xml", DATA / "claim4-demo-buggy-unmap.xml", tmp_path / "gone"]
    root = ET.fromstring(results.merged_junit(files, "patched: demo"))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"patched: demo run {i}/3" for i in (1, 2, 3)]
    assert [len(s.findall("testcase")) for s in suites] == [3, 3, 0]
    assert suites[1].find("testcase/failure") is not None
    note = suites[2].find("properties/property")
    assert note is not None and note.get("name") == "no-results"


# -- rates and states --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "state", "rate"),
    [
        ([], State.ABSENT, "absent"),
        (["pass"] * 3, State.PASS, "0/3 failed"),
        (["fail"] * 3, State.FAIL, "3/3 failed"),
        (["error", "fail"], State.FAIL, "2/2 failed"),
        (["pass", "fail", "pass"], State.FLAKY, "1/3 failed"),
        (["skip", "skip"], State.SKIP, "2/2 skipped"),
        (["skip", "pass"], State.PASS, "0/1 failed (1 skipped)"),
    ],
)
def test_rates_over_repeats(outcomes: list[str], state: State, rate: str) -> None:
    runs = [run_of(test_x=o) for o in outcomes]
    got = results.rates(runs).get("tests/p2p/t.py::test_x", Rates())
    assert got.state is state and got.rate() == rate


# -- the verdict --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "patched", "change"),
    [
        (["pass"], ["fail"], Change.REGRESSION),
        (["pass"], ["error"], Change.REGRESSION),
        (["fail"], ["pass"], Change.FIX),
        (["pass"], ["pass"], Change.UNCHANGED),
        (["fail"], ["fail"], Change.UNCHANGED),
        (["skip"], ["skip"], Change.UNCHANGED),
        (["pass"] * 3, ["pass", "fail", "pass"], Change.FLAKY),  # 0/3 vs 1/3: not a regression
        (["pass", "fail"], ["fail", "fail"], Change.FLAKY),
        (["pass"], ["skip"], Change.SKIP_CHANGE),
        (["skip"], ["fail"], Change.SKIP_CHANGE),
        ([], ["pass"], Change.NEW),
        (["fail"], [], Change.GONE),
    ],
)
def test_classify(base: list[str], patched: list[str], change: Change) -> None:
    b = results.rates([run_of(t=o) for o in base]).get("tests/p2p/t.py::t", Rates())
    p = results.rates([run_of(t=o) for o in patched]).get("tests/p2p/t.py::t", Rates())
    assert verdict.classify(b, p) is change


def test_the_captured_demo_run_is_one_regression_and_two_unchanged() -> None:
    base = results.rates([results.parse_junit(DATA / "claim4-base.xml")])
    demo = results.rates([results.parse_junit(DATA / "claim4-demo-buggy-unmap.xml")])
    rows = verdict.compare(base, demo)
    assert (rows[0].test, rows[0].change) == (LAST_PAGE, Change.REGRESSION)
    assert [r.change for r in rows[1:]] == [Change.UNCHANGED, Change.UNCHANGED]
    assert verdict.exit_code(rows, complete=True) == verdict.EXIT_REGRESSION
    table = verdict.table(rows, "base", "demo")
    assert table.splitlines()[2].startswith("REGRESSION  test_claim4_evict_last_page")
    assert "pass->fail  0/1 failed  1/1 failed" in table
    assert table.splitlines()[-1] == "1 regression, 2 unchanged"


def test_base_against_itself_has_no_regression_and_exits_0() -> None:
    base = results.rates([results.parse_junit(DATA / "claim4-base.xml")] * 2)
    rows = verdict.compare(base, base)
    assert {r.change for r in rows} == {Change.UNCHANGED}
    assert verdict.exit_code(rows, complete=True) == verdict.EXIT_OK
    assert verdict.exit_code(rows, complete=False) == verdict.EXIT_INCOMPLETE
    assert verdict.table(rows, "a", "b").splitlines()[-1] == "0 regression, 3 unchanged"


def test_a_flaky_test_is_reported_with_both_rates_and_does_not_fail() -> None:
    base = results.rates([run_of(t="pass", u="pass")] * 3)
    patched = results.rates(
        [run_of(t="pass", u="pass"), run_of(t="fail", u="pass"), run_of(t="pass", u="pass")]
    )
    rows = verdict.compare(base, patched)
    assert rows[0].change is Change.FLAKY and rows[0].transition == "pass->flaky"
    assert "0/3 failed  1/3 failed" in verdict.table(rows, "base", "patched")
    assert verdict.exit_code(rows, complete=True) == verdict.EXIT_OK


def test_a_regression_outranks_an_incomplete_run() -> None:
    rows = verdict.compare(results.rates([run_of(t="pass")]), results.rates([run_of(t="fail")]))
    assert verdict.exit_code(rows, complete=False) == verdict.EXIT_REGRESSION


def test_the_json_summary_has_the_documented_keys() -> None:
    rows = verdict.compare(
        results.rates([run_of(t="pass", s="skip")]), results.rates([run_of(t="fail", s="pass")])
    )
    summary = verdict.summary(
        rows,
        sides={"base": {"kernel": {"label": "base"}}, "patched": {"kernel": {"label": "p"}}},
        repeat=1,
        selection={"keyword": "claim4", "machine": None, "run_args": []},
        complete=True,
        wall_seconds=12.34,
    )
    assert json.loads(json.dumps(summary)) == summary  # plain JSON
    assert summary["schema"] == verdict.SCHEMA and summary["exit_code"] == 1
    assert summary["counts"] == {
        "regression": 1,
        "flaky": 0,
        "fix": 0,
        "skip-change": 1,
        "new": 0,
        "gone": 0,
        "unchanged": 0,
    }
    first = summary["tests"][0]  # type: ignore[index]
    assert first == {
        "test": "tests/p2p/t.py::t",
        "verdict": "regression",
        "change": "pass->fail",
        "base": {"runs": 1, "passed": 1, "failed": 0, "skipped": 0, "state": "pass"},
        "patched": {"runs": 1, "passed": 0, "failed": 1, "skipped": 0, "state": "fail"},
    }
    assert summary["wall_seconds"] == 12.3 and summary["repeat"] == 1


def test_a_classname_that_is_no_module_path_is_kept() -> None:
    assert results.node_id("hmm-tests", "anon_read") == "hmm-tests::anon_read"
    assert results.node_id("tests.p2p.t", "x[a b]") == "tests/p2p/t.py::x[a b]"
    assert results.node_id("", "lonely") == "lonely"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["regress", "-k", "claim4"], ()),
        (["regress", "--", "--kselftest", "mm/hmm-tests"], ("--kselftest", "mm/hmm-tests")),
        (["bisect", "--series", "s", "--test", "t", "--", "-j", "2"], ("-j", "2")),
    ],
)
def test_run_options_after_the_double_dash_pass_through(
    argv: list[str], expected: tuple[str, ...]
) -> None:
    from testbed.cli import parser
    from testbed.cli.regress import run_args

    assert run_args(parser().parse_args(argv)) == expected


def test_the_failing_tests_artifact_folder(tmp_path: Path) -> None:
    from testbed.regress.runner import Run

    run = Run(tmp_path, 1, 1.0, None)
    test = "tests/p2p/test_claims.py::test_claim4_x"
    assert run.artifact_folder(test) == tmp_path / "artifacts"  # nothing kept
    shared = tmp_path / "artifacts" / "test_claims-shared-guest"
    shared.mkdir(parents=True)
    assert run.artifact_folder(test) == shared
    own = tmp_path / "artifacts" / "tests-p2p-test_unplug.py--test_claim5_zaps-default"
    own.mkdir()
    assert run.artifact_folder("tests/p2p/test_unplug.py::test_claim5_zaps[default]") == own
