"""testbed.ktap: the TAP / KTAP parser and writer, on captured real output and on the ways a
stream goes wrong (a crash mid-run, a truncated last line, duplicated and out-of-order numbers,
kernel console lines interleaved, a bail-out), nesting, and the writer's round trip.

``data/ktap/hmm-tests.tap`` is what ``hmm-tests`` printed in a guest of the ``hmm`` kernel
(Linux 6.12, ``testbed run --kernel hmm --kselftest mm/hmm-tests``), ``hmm-tests-on-base.tap``
the same on the ``base`` kernel (four failures); ``hmm-tests-crash.tap`` and
``hmm-tests-truncated.tap`` are derived from the first (a test checks they are its prefixes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import ktap
from testbed.ktap import Case, Status, Suite

DATA = Path(__file__).parent / "data" / "ktap"
HMM = (DATA / "hmm-tests.tap").read_text()
#: the same program on the base kernel (TEST_HMM but no madvise, hugetlbfs, THP on madvise)
ON_BASE = (DATA / "hmm-tests-on-base.tap").read_text()
#: derived from HMM: the program's output up to the RUN line of test 21, then a console Oops
CRASH = (DATA / "hmm-tests-crash.tap").read_text()
#: derived from HMM: cut in the middle of result 31's line (no newline at the end)
TRUNCATED = (DATA / "hmm-tests-truncated.tap").read_text()
OOPS = (
    "[   41.337000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    "[   41.337100] Oops: 0000 [#1] PREEMPT SMP NOPTI\n"
)


def result_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(("ok ", "not ok "))]


# ---- the captured run --------------------------------------------------------------------------


def test_hmm_tests_capture_parses_into_58_results_29_pass_29_skip() -> None:
    suite = ktap.parse(HMM)
    assert suite.version == "TAP version 13"
    assert suite.plan == 58
    assert [c.number for c in suite.results] == list(range(1, 59))
    counts = suite.counts()
    assert counts[Status.PASS] == 29
    assert counts[Status.SKIP] == 29
    assert counts[Status.FAIL] == counts[Status.ERROR] == 0
    assert suite.problems == ()
    assert suite.ok


def test_hmm_tests_names_and_skip_reasons_are_exactly_what_the_program_printed() -> None:
    suite = ktap.parse(HMM)
    for line, case in zip(result_lines(HMM), suite.results, strict=True):
        head, _, comment = line.partition(" # ")
        assert head.split(" ", 2 if head.startswith("ok") else 3)[-1] == case.name
        if case.status is Status.SKIP:
            assert comment == f"SKIP {case.reason}"
            assert case.reason  # the harness always gives one
    skipped = [c for c in suite.results if c.status is Status.SKIP]
    assert {c.reason for c in skipped} == {"DEVICE_COHERENT not available"}
    assert all("coherent" in c.name for c in skipped)


def test_hmm_tests_diagnostics_belong_to_the_result_that_follows_them() -> None:
    suite = ktap.parse(HMM)
    first = suite.results[0]
    assert first.name == "hmm.hmm_device_private.open_close"
    assert any(f"RUN           {first.name}" in d for d in first.diagnostics)
    assert any(f"OK  {first.name}" in d for d in first.diagnostics)
    for case in suite.results:  # no result carries another test's RUN line
        runs = [d for d in case.diagnostics if "RUN " in d]
        assert runs and all(case.name in d for d in runs), case
    assert "Totals: pass:29 fail:0 xfail:0 xpass:0 skip:29 error:0" in suite.trailer


def test_hmm_tests_on_the_base_kernel_fails_four_tests_with_their_assertions() -> None:
    suite = ktap.parse(ON_BASE)
    counts = suite.counts()
    assert (counts[Status.PASS], counts[Status.FAIL], counts[Status.SKIP]) == (22, 4, 32)
    assert suite.problems == () and not suite.ok
    failed = [c for c in suite.results if c.status is Status.FAIL]
    assert [c.name for c in failed] == [
        "hmm.hmm_device_private.anon_write_huge",
        "hmm.hmm_device_private.exclusive",
        "hmm.hmm_device_private.exclusive_mprotect",
        "hmm.hmm_device_private.exclusive_cow",
    ]
    for case in failed:
        test = case.name.rsplit(".", 1)[1]
        assert any(f":{test}:Expected ret (" in d for d in case.diagnostics), case
        assert f"         FAIL  {case.name}" in case.diagnostics
    reasons = {c.reason for c in suite.results if c.status is Status.SKIP}
    assert "Huge page size could not be determined" in reasons
    # stderr's words without '#', merged into the stream, stay with their test
    coherent = suite.find("hmm.hmm_device_coherent.open_close")
    assert coherent is not None
    assert "could not open hmm dmirror driver (/dev/hmm_dmirror2)" in coherent.diagnostics


# ---- a stream that stops -----------------------------------------------------------------------


def crashed_copy(after: int) -> str:
    """The capture cut right after its ``after``-th result line, then an Oops on the
    console and a shell's word for the dead program."""
    lines = HMM.splitlines(keepends=True)
    seen = 0
    for i, line in enumerate(lines):
        if line.startswith(("ok ", "not ok ")):
            seen += 1
            if seen == after:
                return "".join(lines[: i + 1]) + "#  RUN           next ...\n" + OOPS + "Killed\n"
    raise AssertionError(f"fewer than {after} results")


def test_derived_copies_are_prefixes_of_the_capture() -> None:
    crash = CRASH[: CRASH.index("[   41.337000]")]
    assert HMM.startswith(crash) and crash.endswith("hmm.hmm_device_private.compound ...\n")
    assert HMM.startswith(TRUNCATED) and not TRUNCATED.endswith("\n")


def test_crash_mid_run_reports_every_missing_result_as_an_error_with_the_crash_text() -> None:
    suite = ktap.parse(CRASH)
    assert len(suite.results) == 58
    given, missing = suite.results[:20], suite.results[20:]
    assert [c.number for c in missing] == list(range(21, 59))
    assert all(c.ok is None and c.status is Status.ERROR and c.name == "" for c in missing)
    assert "the stream ended after test 20" in missing[0].reason
    assert "20 of 58 results given" in missing[0].reason
    # what followed the last result -- the RUN line of the test that crashed, then the
    # console's Oops -- stays with the first missing result, verbatim
    assert missing[0].diagnostics[0] == " RUN           hmm.hmm_device_private.compound ..."
    assert "[   41.337200] Oops: 0000 [#1] PREEMPT SMP NOPTI" in missing[0].diagnostics
    assert "[   41.337400] Kernel panic - not syncing: Fatal exception" in missing[0].diagnostics
    assert all(c.diagnostics == () for c in missing[1:])
    assert suite.counts()[Status.ERROR] == 38
    assert all(c.ok is not None for c in given)
    assert [str(p) for p in suite.problems] == [
        "38 of 58 planned results missing (21-58): the stream ended after test 20 (line "
        f"{given[-1].line})"
    ]
    assert not suite.ok


def test_a_truncated_last_line_is_never_taken_as_a_result() -> None:
    suite = ktap.parse(TRUNCATED)
    assert TRUNCATED.rsplit("\n", 1)[1] == "ok 31 hmm.hmm_devi"
    assert [c.ok is not None for c in suite.results] == [True] * 30 + [False] * 28
    assert suite.results[30].number == 31 and suite.results[30].status is Status.ERROR
    assert "ok 31 hmm.hmm_devi" in suite.results[30].diagnostics
    assert suite.find("hmm.hmm_devi") is None  # never a result under a cut name
    assert "line 106: truncated last line (no newline): 'ok 31 hmm.hmm_devi'" in [
        str(p) for p in suite.problems
    ]


def test_a_killed_program_mid_run_with_a_shell_message() -> None:
    suite = ktap.parse(crashed_copy(20))
    assert suite.counts()[Status.ERROR] == 38
    assert "Killed" in suite.results[20].diagnostics


def test_an_empty_stream_and_one_with_only_a_plan() -> None:
    assert ktap.parse("").results == ()
    only_plan = ktap.parse("TAP version 13\n1..3\n")
    assert [c.status for c in only_plan.results] == [Status.ERROR] * 3
    assert "before the first result" in only_plan.results[0].reason


def test_bail_out_names_its_reason_in_the_missing_results() -> None:
    suite = ktap.parse("TAP version 13\n1..3\nok 1 a\nBail out! no /dev/hmm_dmirror0\n")
    assert suite.bail_out == "no /dev/hmm_dmirror0"
    assert suite.results[1].ok is None
    assert "bailed out (no /dev/hmm_dmirror0)" in suite.results[1].reason
    assert any("bailed out" in str(p) for p in suite.problems)


# ---- numbering ---------------------------------------------------------------------------------


def test_duplicated_and_out_of_order_numbers_are_problems_and_both_results_are_kept() -> None:
    suite = ktap.parse("1..4\nok 1 a\nok 1 a-again\nok 3 c\nok 2 b\nok 4 d\n")
    assert [c.name for c in suite.results] == ["a", "a-again", "c", "b", "d"]
    messages = [str(p) for p in suite.problems]
    assert "line 3: duplicate test number 1 (first at line 2)" in messages
    assert "line 4: test number 3 out of order (expected 2)" in messages
    assert "line 5: test number 2 out of order (expected 4)" in messages
    assert not any("missing" in m for m in messages)


def test_results_beyond_the_plan_and_a_missing_plan_are_problems() -> None:
    beyond = ktap.parse("1..1\nok 1 a\nok 2 b\n")
    assert [str(p) for p in beyond.problems] == ["line 3: test number 2 beyond the plan 1..1"]
    unplanned = ktap.parse("ok 1 a\nok 2 b\n")
    assert unplanned.plan is None
    assert "no plan" in str(unplanned.problems[0])


def test_tap_without_numbers_counts_on() -> None:
    suite = ktap.parse("1..2\nok - first\nnot ok - second\n")
    assert [(c.number, c.name, c.status) for c in suite.results] == [
        (1, "first", Status.PASS),
        (2, "second", Status.FAIL),
    ]
    assert suite.problems == ()


# ---- directives and garbage -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "directive", "reason"),
    [
        ("ok 1 a", Status.PASS, None, ""),
        ("not ok 1 a", Status.FAIL, None, ""),
        ("ok 1 a # SKIP no device", Status.SKIP, "SKIP", "no device"),
        ("not ok 1 a # skip lower case", Status.SKIP, "SKIP", "lower case"),
        ("ok 1 - a # SKIPPED", Status.SKIP, "SKIP", ""),
        ("not ok 1 a # TODO not written", Status.XFAIL, "TODO", "not written"),
        ("ok 1 a # TODO done early", Status.PASS, "TODO", "done early"),
        ("ok 1 a # XFAIL known", Status.XFAIL, "XFAIL", "known"),
        ("not ok 1 a # TIMEOUT 30 s", Status.ERROR, "TIMEOUT", "30 s"),
        ("not ok 1 a # ERROR setup", Status.ERROR, "ERROR", "setup"),
        ("not ok 1 a #  kselftest's message", Status.FAIL, None, "kselftest's message"),
        ("ok 1 a # Skipping is not a directive", Status.PASS, None, "Skipping is not a directive"),
    ],
)
def test_directives(line: str, status: Status, directive: str | None, reason: str) -> None:
    case = ktap.parse(f"1..1\n{line}\n").results[0]
    assert (case.name, case.status, case.directive, case.reason) == ("a", status, directive, reason)


def test_kernel_console_lines_interleaved_are_diagnostics_not_results() -> None:
    noisy = []
    for line in HMM.splitlines():
        noisy.append(line)
        if line.startswith("ok 7 "):
            noisy += ["[   12.345678] hmm_dmirror: loaded", "okay, that was the console", OOPS]
    suite = ktap.parse("\n".join(noisy) + "\n")
    assert suite.counts() == ktap.parse(HMM).counts()
    assert suite.problems == ()
    assert "[   12.345678] hmm_dmirror: loaded" in suite.results[7].diagnostics
    assert "okay, that was the console" in suite.results[7].diagnostics


# ---- nesting -----------------------------------------------------------------------------------

KUNIT = """\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: example
    # module: example_test
    1..3
    ok 1 example_simple_test
    # example_skip_test: some reason
    ok 2 example_skip_test # SKIP this test should be skipped
        KTAP version 1
        # Subtest: example_params_test
        ok 1 example value 3 # SKIP unsupported
        ok 2 example value 2
    # example_params_test: pass:1 fail:0 skip:1 total:2
    ok 3 example_params_test
# example: pass:2 fail:0 skip:1 total:3
ok 1 example
    KTAP version 1
    # Subtest: other
    1..1
    not ok 1 broken
not ok 2 other
"""


def test_nested_ktap_by_indentation() -> None:
    suite = ktap.parse(KUNIT)
    assert suite.version == "KTAP version 1" and suite.plan == 2
    example, other = suite.results
    assert (example.name, example.status, other.status) == ("example", Status.PASS, Status.FAIL)
    assert example.subtests is not None and example.subtests.name == "example"
    assert [c.status for c in example.subtests.results] == [Status.PASS, Status.SKIP, Status.PASS]
    params = example.subtests.results[2].subtests
    assert params is not None and params.name == "example_params_test"
    assert [c.name for c in params.results] == ["example value 3", "example value 2"]
    assert example.diagnostics == ("example: pass:2 fail:0 skip:1 total:3",)
    paths = [p for p, _ in suite.walk()]
    assert "example.example_params_test.example value 2" in paths
    assert "other.broken" in paths
    # params had no plan (KUnit prints none for parameterised tests): reported, at that level
    assert [str(p) for p in suite.all_problems()] == [
        "no plan (1..N): cannot tell whether results are missing"
    ]


def test_subtest_header_at_the_parent_level_names_the_nested_block() -> None:
    text = "TAP version 14\n1..1\n# Subtest: grp\n    1..1\n    ok 1 x\nok 1 grp\n"
    case = ktap.parse(text).results[0]
    assert case.subtests is not None and case.subtests.name == "grp"
    assert case.subtests.results[0].name == "x"


def test_stream_ending_inside_subtests_reports_the_parent_as_no_result() -> None:
    text = "KTAP version 1\n1..2\nok 1 a\n    KTAP version 1\n    # Subtest: b\n    1..2\n"
    text += "    ok 1 b1\n"
    suite = ktap.parse(text)
    parent = suite.results[1]
    assert (parent.number, parent.name, parent.ok) == (2, "b", None)
    assert parent.subtests is not None
    assert [c.status for c in parent.subtests.results] == [Status.PASS, Status.ERROR]
    assert not suite.ok


# ---- the writer --------------------------------------------------------------------------------


def test_dump_then_parse_gives_the_same_suite() -> None:
    inner = Suite(
        (
            Case(1, "hmm.hmm_device_private.open_close", True, diagnostics=("  RUN x", "")),
            Case(2, "hmm.hmm_device_coherent.open_close", True, "SKIP", "no DEVICE_COHERENT"),
            Case(3, "broken", False, diagnostics=("hmm-tests.c:42:x:Expected 0 (0) == ret (-1)",)),
            Case(4, "never ran", False, "ERROR", "no result: the guest panicked"),
        ),
        plan=4,
        name="hmm-tests",
        version="KTAP version 1",
    )
    top = Suite(
        (
            Case(1, "test_claim1_map[default]", True),
            Case(2, "hmm-tests", False, subtests=inner, diagnostics=("exit status 1",)),
        ),
        plan=2,
        version="KTAP version 1",
    )
    text = ktap.dump(top)
    assert text.startswith("KTAP version 1\n1..2\n")
    assert "    # Subtest: hmm-tests\n" in text
    assert ktap.parse(text) == top


def test_dump_writes_a_missing_result_as_error_and_the_capture_keeps_its_counts() -> None:
    crashed = ktap.parse(crashed_copy(10))
    again = ktap.parse(ktap.dump(crashed))
    assert again.counts() == crashed.counts()
    assert again.results[10].directive == "ERROR" and again.results[10].ok is False
    assert [c.name for c in again.results] == [c.name for c in crashed.results]


def test_two_nested_blocks_in_a_row_make_the_first_an_orphan_not_a_lost_test() -> None:
    text = "KTAP version 1\n1..2\n    # Subtest: a\n    1..1\n    ok 1 a1\n"
    text += "  # Subtest: b\n  1..1\n  ok 1 b1\nok 2 b\n"
    suite = ktap.parse(text)
    assert [(c.number, c.name, c.ok) for c in suite.results] == [(1, "a", None), (2, "b", True)]
    assert [str(p) for p in suite.problems] == ["line 6: subtests 'a' have no result line"]
