"""The mutants' pure logic (testbed.p2p.mutants): catalogue files, statuses, the matrix.

Inputs in ``tests/data/mutants/``: a well-formed catalogue file and a pytest JUnit file with
a failure, a setup error, a teardown error and parametrized tests. The real catalogue in
``qemu-devices/p2p/mutants/`` is parsed too, and held to the task's floor (12 mutants, every
claim of DEVELOPERS.md covered). Applying and building for real is in
``tests/vm/test_mutants.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import paths
from testbed.errors import ConfigError
from testbed.p2p import mutants as mut

DATA = Path(__file__).resolve().parent.parent / "data" / "mutants"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


DIFF = """diff --git a/exporter/x.c b/exporter/x.c
--- a/exporter/x.c
+++ b/exporter/x.c
@@ -1,1 +1,1 @@
-a
+b
"""


def test_parse_reads_the_header_and_keeps_the_diff() -> None:
    m = mut.parse_mutant(DATA / "01-good-one.patch")
    assert m.name == "01-good-one"
    assert m.claim == "2 (predictable): calling p2p_map again succeeds"
    assert m.plants == "p2p_map refuses a second mapping of an object already mapped"
    assert m.caught_by == "claim2"
    assert m.diff.startswith("diff --git a/exporter/x.c")
    assert m.diff.endswith(" d\n")


@pytest.mark.parametrize(
    ("name", "text", "message", "line"),
    [
        ("01-x.patch", "Claim: 1\n\n" + DIFF, "header field Plants is missing", 1),
        ("01-x.patch", "Plants: a bug\n" + DIFF, "header field Claim is missing", 1),
        ("01-x.patch", "Claim:\nPlants: b\n" + DIFF, "header field Claim is missing", 1),
        ("01-x.patch", "Claim: 1\nPlants: b\nOwner: me\n" + DIFF, "expected a header field", 3),
        ("01-x.patch", "Claim: 1\nClaim: 2\nPlants: b\n" + DIFF, "given twice", 2),
        ("01-x.patch", "Claim: 1\nPlants: b\n", "no unified diff", None),
        ("01-x.patch", "Claim: 1\nPlants: b\n--- a/x\n+++ b/x\n", "no unified diff", None),
        ("1-x.patch", "Claim: 1\nPlants: b\n" + DIFF, "NN-name.patch", None),
        ("01-Bad_Name.patch", "Claim: 1\nPlants: b\n" + DIFF, "NN-name.patch", None),
    ],
)
def test_malformed_catalogue_files_name_file_and_line(
    tmp_path: Path, name: str, text: str, message: str, line: int | None
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        mut.parse_mutant(path)
    assert info.value.path == path
    assert info.value.line == line


def test_catalogue_is_sorted_and_only_selects_by_name_or_number(tmp_path: Path) -> None:
    for name in ("02-b", "01-a", "10-c"):
        write(tmp_path, f"{name}.patch", "Claim: 1\nPlants: b\n" + DIFF)
    write(tmp_path, "README.md", "not a patch")
    assert [m.name for m in mut.catalogue(tmp_path)] == ["01-a", "02-b", "10-c"]
    assert [m.name for m in mut.catalogue(tmp_path, ["10", "01-a"])] == ["01-a", "10-c"]
    with pytest.raises(ConfigError, match=r"unknown mutant.*99-z; known: 01-a, 02-b, 10-c"):
        mut.catalogue(tmp_path, ["99-z"])


def test_an_empty_catalogue_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no mutants \(\*\.patch\)"):
        mut.catalogue(tmp_path)


def test_the_real_catalogue_covers_every_claim_with_at_least_twelve_mutants() -> None:
    catalogue = mut.catalogue()
    assert len(catalogue) >= 12
    assert mut.catalogue_dir() == paths.PROJECT_ROOT / "qemu-devices" / "p2p" / "mutants"
    claims = {int(c) for m in catalogue for c in re.findall(r"^(\d) \(", m.claim)}
    assert claims == set(range(1, 9)), f"claims without a mutant: {set(range(1, 9)) - claims}"
    # the four bugs the issue found the suite blind to
    names = {m.name[3:] for m in catalogue}
    assert {
        "unmap-keeps-record",
        "map-ignores-range-start",
        "param-default-changed",
        "lazy-unmap-stale-dma",
    } <= names
    for m in catalogue:
        assert m.caught_by, f"{m.name}: say which tests are meant to catch it"
        assert "a/" in m.diff and "@@" in m.diff


# -- statuses -----------------------------------------------------------------------------


def test_judge_counts_only_tests_that_pass_without_the_mutant() -> None:
    out = mut.judge("01-a", ["t::b", "t::a", "t::flaky"], ["t::flaky"], seconds=3.5)
    assert out.status is mut.Status.CAUGHT
    assert out.caught_by == ("t::a", "t::b")
    assert out.seconds == 3.5


def test_judge_a_mutant_whose_only_failures_also_fail_without_it_survives() -> None:
    out = mut.judge("01-a", ["t::flaky"], ["t::flaky"])
    assert out.status is mut.Status.SURVIVED and out.caught_by == ()
    assert mut.judge("01-a", []).status is mut.Status.SURVIVED


def test_judge_no_report_is_no_result_never_caught() -> None:
    out = mut.judge("01-a", None, detail="pytest exited 3")
    assert out.status is mut.Status.NO_RESULT and out.detail == "pytest exited 3"


def test_exit_code_is_zero_only_when_everything_was_caught() -> None:
    caught = mut.Outcome("01-a", mut.Status.CAUGHT, ("t::a",))
    assert mut.exit_code([caught]) == 0
    assert mut.exit_code([]) == 1
    for status in set(mut.Status) - {mut.Status.CAUGHT}:
        assert mut.exit_code([caught, mut.Outcome("02-b", status)]) == 1, status


def test_matrix_marks_who_caught_what_and_explains_the_rest() -> None:
    outcomes = [
        mut.Outcome(
            "01-leak", mut.Status.CAUGHT, ("tests/a.py::t_one", "tests/b.py::t_two"), "", 61
        ),
        mut.Outcome("02-range", mut.Status.CAUGHT, ("tests/b.py::t_two",), "", 59.6),
        mut.Outcome("03-quiet", mut.Status.SURVIVED, (), "pytest exited 0", 58),
        mut.Outcome("04-stale", mut.Status.NOT_APPLYING, (), "patch failed: x.c:12", 0),
        mut.Outcome("05-broken", mut.Status.NOT_COMPILING, (), "error at x.c:3", 4),
    ]
    assert mut.matrix(outcomes).splitlines() == [
        "mutant     T1  T2  status            seconds",
        "01-leak    X   X   caught (2 tests)  61",
        "02-range   .   X   caught (1 test)   60",
        "03-quiet   .   .   SURVIVED          58",
        "04-stale   .   .   does not apply    0",
        "05-broken  .   .   does not compile  4",
        "",
        "  T1 = t_one",
        "  T2 = t_two",
        "2/5 mutants caught",
        "03-quiet: SURVIVED: pytest exited 0",
        "04-stale: does not apply: patch failed: x.c:12",
        "05-broken: does not compile: error at x.c:3",
    ]


def test_short_test_keeps_the_parameters() -> None:
    assert mut.short_test("tests/p2p/test_unplug.py::test_claim5[native-hotplug]") == (
        "test_claim5[native-hotplug]"
    )


# -- JUnit --------------------------------------------------------------------------------


def test_parse_junit_lists_failures_and_errors_once() -> None:
    result = mut.parse_junit(DATA / "junit-sample.xml")
    assert result is not None
    assert result.tests == (
        "tests/p2p/test_claims.py::test_claim1_map",
        "tests/p2p/test_claims.py::test_claim2_second_map",
        "tests/p2p/test_claims.py::test_claim3_x",
        "tests/p2p/test_unplug.py::test_claim5_zaps[default]",
        "tests/p2p/test_unplug.py::test_claim5_zaps[native-hotplug]",
    )
    assert result.failed == (
        "tests/p2p/test_claims.py::test_claim2_second_map",
        "tests/p2p/test_claims.py::test_claim3_x",
        "tests/p2p/test_unplug.py::test_claim5_zaps[default]",
    )


def test_parse_junit_missing_or_broken_is_none(tmp_path: Path) -> None:
    assert mut.parse_junit(tmp_path / "nope.xml") is None
    assert mut.parse_junit(write(tmp_path, "bad.xml", "<testsuites><testcase")) is None


# -- the command line ---------------------------------------------------------------------


def test_cli_builds_one_child_pytest_per_mutant_against_the_patched_copy(tmp_path: Path) -> None:
    from testbed.cli import mutants as cli
    from testbed.cli import parser

    args = parser().parse_args(
        [
            "mutants",
            "--only",
            "04",
            "--only",
            "14-dereg-unmaps-twice",
            "-k",
            "claim4",
            "--accel",
            "tcg",
            "--suite-timeout",
            "60",
        ]
    )
    assert args.func is cli.main and args.only == ["04", "14-dereg-unmaps-twice"]
    assert args.suite_timeout == 60.0 and not args.no_baseline
    argv = cli._suite_argv(args, tmp_path / "04-x", tmp_path / "tree")
    assert argv[1:4] == ["-m", "pytest", str(cli.SUITE)]
    assert f"--testbed-p2p-src={tmp_path / 'tree'}" in argv
    assert f"--junitxml={tmp_path / '04-x' / 'junit.xml'}" in argv
    assert f"--testbed-artifacts={tmp_path / '04-x' / 'tests'}" in argv
    assert argv[-3:] == ["-k", "claim4", "--testbed-accel=tcg"]
    baseline = cli._suite_argv(args, tmp_path / "baseline", None)
    assert not any(a.startswith("--testbed-p2p-src") for a in baseline)
