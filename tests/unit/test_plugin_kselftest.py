"""The plugin's kselftest items (testbed.pytest_plugin.kselftest) in a real pytest session
(pytester), with the guest run replaced by the captured hmm-tests output: what pytest, its
JUnit XML and the results table make of a complete run and of one that crashed mid-way.
The program is neither built nor booted here (ci/test.sh does that for real)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed import ktap, paths
from testbed.config.kselftests import KselftestSpec
from testbed.kselftest import guest
from testbed.kselftest.build import KselftestError, Program, parse_listing
from testbed.pytest_plugin import kselftest as plugin

pytest_plugins = ["pytester"]

DATA = Path(__file__).parent / "data" / "ktap"
HMM = (DATA / "hmm-tests.tap").read_text()
NAMES = parse_listing((DATA / "hmm-tests-list.txt").read_text())


def outcome(testcase: ET.Element) -> list[ET.Element]:
    """The testcase's result elements (failure, error, skipped), without its properties."""
    return [child for child in testcase if child.tag != "properties"]


def fake_run(
    monkeypatch: pytest.MonkeyPatch, output: str, exitcode: int | None, stopped: str = ""
) -> None:
    def build_program(spec: KselftestSpec, request: object) -> Program:
        return Program(spec, Path("/nonexistent/hmm-tests"), NAMES, "key", 0.0)

    def run(self: plugin.KselftestFile) -> guest.Outcome:
        return guest.Outcome(output, exitcode, 1.0, stopped, ktap.parse(output))

    monkeypatch.setattr(guest, "request_for", lambda selection, spec: None)
    monkeypatch.setattr(plugin, "build_program", build_program)
    monkeypatch.setattr(plugin.KselftestFile, "_run", run)


def run_session(pytester: pytest.Pytester) -> tuple[pytest.RunResult, dict[str, ET.Element]]:
    folder = pytester.path / "kselftests" / "mm"
    folder.mkdir(parents=True)
    spec = paths.kernel_config_dir() / "kselftests" / "mm" / "hmm-tests.yaml"
    (folder / "hmm-tests.yaml").write_text(spec.read_text())
    result = pytester.runpytest(
        str(folder / "hmm-tests.yaml"), "--junitxml=out.xml", "-o", "junit_family=xunit1"
    )
    cases = {
        c.get("name", ""): c for c in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    }
    return result, cases


def test_a_complete_run_is_one_testcase_per_test_with_the_printed_status(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_run(monkeypatch, HMM, 0)
    result, cases = run_session(pytester)
    result.assert_outcomes(passed=30, skipped=29)  # 29 + the program itself
    assert len(cases) == 59
    printed = ktap.parse(HMM)
    for case in printed.results:
        element = cases[f"hmm-tests.{case.name}"]
        assert element.get("classname") == "kselftest.mm.hmm-tests"
        children = [child.tag for child in element if child.tag != "properties"]
        if case.status is ktap.Status.SKIP:
            assert children == ["skipped"]
            skipped = element.find("skipped")
            assert skipped is not None
            assert skipped.get("message") == case.reason == "DEVICE_COHERENT not available"
        else:
            assert children == []
    assert [child.tag for child in cases["hmm-tests"] if child.tag != "properties"] == []


def crashed(after: int) -> str:
    lines = HMM.splitlines(keepends=True)
    results = [i for i, ln in enumerate(lines) if ln.startswith(("ok ", "not ok "))]
    return "".join(lines[: results[after - 1] + 1]) + "#  RUN           hmm.next ...\n"


def test_a_crash_mid_run_fails_the_tests_it_prevented_by_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_run(monkeypatch, crashed(40), None, "GuestPanic: Kernel panic - not syncing: Fatal")
    result, cases = run_session(pytester)
    given = ktap.parse(HMM).results[:40]
    result.assert_outcomes(
        passed=sum(c.status is ktap.Status.PASS for c in given),
        skipped=sum(c.status is ktap.Status.SKIP for c in given),
        failed=1,  # the program
        errors=18,
    )
    for name in NAMES[40:]:
        (error,) = outcome(cases[f"hmm-tests.{name}"])
        assert error.tag == "error"
        assert "no result: the stream ended after test 40" in (error.text or "")
        assert "GuestPanic: Kernel panic" in (error.text or "")
    (failure,) = outcome(cases["hmm-tests"])
    assert failure.tag == "failure"
    assert "18 of 58 planned results missing (41-58)" in (failure.text or "")
    assert "the run did not finish: GuestPanic" in (failure.text or "")


def test_a_failed_test_carries_what_the_program_printed_for_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = HMM.replace(
        "ok 3 hmm.hmm_device_private.anon_read_prot\n",
        "# hmm-tests.c:333:anon_read_prot:Expected ret (-14) == 0 (0)\n"
        "not ok 3 hmm.hmm_device_private.anon_read_prot\n",
    )
    assert broken != HMM
    fake_run(monkeypatch, broken, 1)
    result, cases = run_session(pytester)
    result.assert_outcomes(passed=28, skipped=29, failed=2)
    (failure,) = outcome(cases["hmm-tests.hmm.hmm_device_private.anon_read_prot"])
    assert failure.tag == "failure"
    assert "Expected ret (-14) == 0 (0)" in (failure.text or "")
    assert "exit status 1" in (outcome(cases["hmm-tests"])[0].text or "")


def test_a_run_that_cannot_start_errors_every_test_with_the_fix_after_one_attempt(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_run(monkeypatch, "", None)
    attempts: list[int] = []

    def cannot(self: plugin.KselftestFile) -> guest.Outcome:
        attempts.append(1)
        raise KselftestError("kernel mine lacks CONFIG_TEST_HMM (is not set); fix: add hmm.config")

    monkeypatch.setattr(plugin.KselftestFile, "_run", cannot)
    result, cases = run_session(pytester)
    result.assert_outcomes(errors=58, failed=1)
    assert attempts == [1]
    for name in NAMES:
        (error,) = outcome(cases[f"hmm-tests.{name}"])
        assert error.tag == "error"
        assert "did not run: kernel mine lacks CONFIG_TEST_HMM" in (error.text or "")
