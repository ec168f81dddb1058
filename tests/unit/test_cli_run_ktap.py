"""``testbed run --kselftest`` and ``--ktap`` (testbed.cli.run): the rows a run collects, fed
as pytest would feed them, written as KTAP and read back by our parser; and pytest's argv."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from testbed import ktap, paths
from testbed.cli import parser
from testbed.cli.run import SUITE, Collector, ktap_report, pytest_args, write_ktap
from testbed.errors import UnknownNameError
from testbed.ktap import Status

KSELF = "kselftest/mm/hmm-tests::hmm-tests"
SKIP_REASON = "DEVICE_COHERENT not available"


def report(nodeid: str, when: str, outcome: str, longrepr: Any = None) -> pytest.TestReport:
    path, _, name = nodeid.partition("::")
    return pytest.TestReport(
        nodeid=nodeid,
        location=(path, None, name),
        keywords={},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=longrepr,
        when=when,  # type: ignore[arg-type]
        duration=0.5,
    )


def run_rows() -> Collector:
    c = Collector()
    feed = c.pytest_runtest_logreport
    # the P2P suite
    for when in ("setup", "call", "teardown"):
        feed(report("tests/p2p/test_claims.py::test_claim1_map", when, "passed"))
    feed(report("tests/p2p/test_claims.py::test_claim7_gone", "setup", "passed"))
    feed(report("tests/p2p/test_claims.py::test_claim7_gone", "call", "failed", "assert 0\nboom"))
    # a kselftest: pass, skip (its reason), fail (its diagnostics), error (no result)
    feed(report(f"{KSELF}.hmm.hmm_device_private.open_close", "call", "passed"))
    skip = ("guest-kernel-config/kselftests/mm/hmm-tests.yaml", 1, f"Skipped: {SKIP_REASON}")
    feed(report(f"{KSELF}.hmm.hmm_device_coherent.open_close", "call", "skipped", skip))
    feed(report(f"{KSELF}.hmm.hmm_device_private.migrate", "call", "failed", "not ok 3 x\n  y"))
    feed(report(f"{KSELF}.hmm.hmm_device_private.compound", "setup", "failed", "no result: x"))
    feed(report(KSELF, "call", "failed", "mm/hmm-tests: exit status 1"))
    return c


def test_kselftest_rows_are_named_after_the_program_and_keep_the_skip_reason() -> None:
    rows = {r.test: r for r in run_rows().rows.values()}
    row = rows["hmm-tests.hmm.hmm_device_coherent.open_close"]
    assert (row.claim, row.result, row.message) == ("kselftest", "skipped", SKIP_REASON)
    assert rows["hmm-tests.hmm.hmm_device_private.compound"].result == "ERROR"
    assert rows["test_claim7_gone"].message == "assert 0\nboom"


def test_ktap_report_nests_the_program_and_parses_back_equal(tmp_path: Path) -> None:
    rows = list(run_rows().rows.values())
    suite = ktap_report(rows)
    assert [c.name for c in suite.results] == ["test_claim1_map", "test_claim7_gone", "hmm-tests"]
    program = suite.results[2]
    assert program.ok is False and program.subtests is not None
    assert program.subtests.name == "hmm-tests"
    assert [(c.name, c.status) for c in program.subtests.results] == [
        ("hmm.hmm_device_private.open_close", Status.PASS),
        ("hmm.hmm_device_coherent.open_close", Status.SKIP),
        ("hmm.hmm_device_private.migrate", Status.FAIL),
        ("hmm.hmm_device_private.compound", Status.ERROR),
    ]
    assert program.subtests.results[1].reason == SKIP_REASON
    out = tmp_path / "run.ktap"
    write_ktap(out, rows)
    text = out.read_text()
    assert "ok 2 hmm.hmm_device_coherent.open_close # SKIP DEVICE_COHERENT not available" in text
    back = ktap.parse(text)
    assert back == suite
    assert back.problems == ()


def test_ktap_report_of_a_program_whose_own_row_was_deselected() -> None:
    c = Collector()
    c.pytest_runtest_logreport(report(f"{KSELF}.a", "call", "passed"))
    suite = ktap_report(list(c.rows.values()))
    assert (suite.results[0].name, suite.results[0].ok) == ("hmm-tests", True)


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["run", *argv])


def test_kselftest_replaces_the_suite_unless_p2p_is_given() -> None:
    spec = paths.kernel_config_dir() / "kselftests" / "mm" / "hmm-tests.yaml"
    alone = pytest_args(args("--kselftest", "mm/hmm-tests", "--ktap", "x.ktap"))
    assert alone[0] == str(spec) and str(SUITE) not in alone
    both = pytest_args(args("--kselftest", "mm/hmm-tests", "--p2p"))
    assert both[:2] == [str(spec), str(SUITE)]
    assert pytest_args(args())[0] == str(SUITE)


def test_unknown_kselftest_is_a_usage_error_listing_the_known() -> None:
    with pytest.raises(UnknownNameError, match="known: mm/hmm-tests"):
        pytest_args(args("--kselftest", "mm/hmm"))


def test_table_lists_kselftest_rows_after_the_claims() -> None:
    from testbed.cli.run import table

    text = table(list(run_rows().rows.values()))
    lines = text.splitlines()
    claims = [i for i, ln in enumerate(lines) if ln[:6] in ("claim1", "claim7")]
    kself = [i for i, ln in enumerate(lines) if ln.startswith("kselftest")]
    assert len(claims) == 2 and len(kself) == 5
    assert max(claims) < min(kself)
    assert any("hmm-tests.hmm.hmm_device_coherent.open_close  skipped" in ln for ln in lines)
