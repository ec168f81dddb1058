"""``testbed run``'s results table (testbed.cli.run): the collector, the table, pytest's argv.

The collector is fed real :class:`pytest.TestReport` objects, as pytest would hand them to
``pytest_runtest_logreport`` (setup, call, teardown per test); nothing runs the suite.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from testbed.cli import parser
from testbed.cli import run as run_cmd
from testbed.cli.run import SUITE, Collector, Row, context, pytest_args, table
from testbed.cli.run import main as run_main
from testbed.errors import GuestUnreachable
from testbed.pytest_plugin import settings

pytest_plugins = ["pytester"]

NODE = "tests/p2p/test_claims.py::test_claim6_unplug_waits[acpi]"

Outcome = Literal["passed", "failed", "skipped"]
When = Literal["setup", "call", "teardown"]


def report(
    nodeid: str, when: When, outcome: Outcome = "passed", duration: float = 0.0
) -> pytest.TestReport:
    longrepr: Any = None
    if outcome == "failed":
        longrepr = "AssertionError: boom"
    elif outcome == "skipped":
        longrepr = ("tests/p2p/test_claims.py", 1, "Skipped: no KVM")
    path, _, name = nodeid.partition("::")
    return pytest.TestReport(
        nodeid=nodeid,
        location=(path, 10, name),
        keywords={},
        outcome=outcome,
        longrepr=longrepr,
        when=when,
        duration=duration,
    )


def feed(collector: Collector, nodeid: str, *phases: tuple[When, Outcome, float]) -> None:
    for when, outcome, duration in phases:
        collector.pytest_runtest_logreport(report(nodeid, when, outcome, duration))


# ---- Collector -------------------------------------------------------------------------------


def test_passed_test_row_sums_the_three_phases() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "passed", 0.5), ("call", "passed", 2.0), ("teardown", "passed", 0.25))
    assert list(c.rows.values()) == [
        Row("claim6", "test_claim6_unplug_waits[acpi]", "passed", 2.75)
    ]


def test_setup_failure_is_an_error() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "failed", 1.5), ("teardown", "passed", 0.5))
    assert c.rows[NODE].result == "ERROR"
    assert c.rows[NODE].seconds == pytest.approx(2.0)


def test_call_failure_is_a_failure_and_stays_one() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "passed", 0.1), ("call", "failed", 3.0), ("teardown", "passed", 0.1))
    assert c.rows[NODE].result == "FAILED"
    assert c.rows[NODE].seconds == pytest.approx(3.2)


def test_teardown_failure_after_a_pass_is_an_error() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "passed", 0.0), ("call", "passed", 1.0), ("teardown", "failed", 0.0))
    assert c.rows[NODE].result == "ERROR"


def test_skip_in_setup() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "skipped", 0.01), ("teardown", "passed", 0.0))
    assert c.rows[NODE].result == "skipped"


def test_skip_does_not_hide_a_failure() -> None:
    c = Collector()
    feed(c, NODE, ("setup", "failed", 0.0), ("teardown", "skipped", 0.0))
    assert c.rows[NODE].result == "ERROR"


@pytest.mark.parametrize(
    ("nodeid", "claim", "test"),
    [
        (
            "tests/p2p/test_claims.py::test_claim1_map_yields_bus_addresses",
            "claim1",
            "test_claim1_map_yields_bus_addresses",
        ),
        ("tests/p2p/test_claims.py::test_claim12_x[native]", "claim12", "test_claim12_x[native]"),
        (
            "tests/p2p/test_extra.py::TestUnplug::test_claim7_late[a::b]",
            "claim7",
            "TestUnplug::test_claim7_late[a::b]",
        ),
        (
            "tests/p2p/test_extra.py::test_unplug_with_mapped_memory",
            "-",
            "test_unplug_with_mapped_memory",
        ),
        ("tests/p2p/test_extra.py::test_claims_table", "-", "test_claims_table"),
    ],
)
def test_claim_and_test_name_from_the_node_id(nodeid: str, claim: str, test: str) -> None:
    c = Collector()
    feed(c, nodeid, ("call", "passed", 1.0))
    row = c.rows[nodeid]
    assert (row.claim, row.test) == (claim, test)


def test_rows_keep_the_run_order_and_parametrizations_apart() -> None:
    c = Collector()
    a = "tests/p2p/test_claims.py::test_claim6_unplug_waits[native]"
    b = "tests/p2p/test_claims.py::test_claim6_unplug_waits[acpi]"
    z = "tests/p2p/test_claims.py::test_claim1_x"
    for node in (a, b, z):
        feed(c, node, ("setup", "passed", 0.0), ("call", "passed", 1.0))
    assert list(c.rows) == [a, b, z]
    assert [r.test for r in c.rows.values()] == [
        "test_claim6_unplug_waits[native]",
        "test_claim6_unplug_waits[acpi]",
        "test_claim1_x",
    ]


def test_machine_and_path_come_from_the_tests_junit_properties() -> None:
    c = Collector()
    rep = report(NODE, "teardown", "passed", 0.1)
    rep.user_properties = [("machine", "switch"), ("p2p_path", "vm_ops"), ("other", "x")]
    c.pytest_runtest_logreport(rep)
    rep = report(NODE, "teardown", "passed", 0.1)
    rep.user_properties = [("machine", "switch"), ("p2p_path", "")]  # no guest booted yet
    c.pytest_runtest_logreport(rep)
    assert c.facts == {"machine": {"switch"}, "p2p_path": {"vm_ops"}}
    lines = table(list(c.rows.values()), c.facts).splitlines()
    assert lines[0] == "results (path: vm_ops, machine: switch)"
    assert lines[-1].endswith("passed in 0.2 s (path: vm_ops, machine: switch)")
    assert context({"machine": set(), "p2p_path": {"compat", "vm_ops"}}) == (
        "path: compat/vm_ops, machine: ?"
    )
    assert context({"machine": {"default"}, "p2p_path": set()}) == (
        "path: none (no P2P drivers loaded), machine: default"
    )


# ---- table -----------------------------------------------------------------------------------


def test_table_aligns_columns_and_totals() -> None:
    rows = [
        Row("claim6", "test_claim6_unplug_waits[acpi]", "passed", 12.34),
        Row("-", "test_helper", "FAILED", 3.0),
        Row("claim10", "test_claim10_x", "ERROR", 100.0),
    ]
    assert table(rows).splitlines() == [
        "claim    test                            result  seconds",
        "-------  ------------------------------  ------  -------",
        "claim6   test_claim6_unplug_waits[acpi]  passed     12.3",
        "claim10  test_claim10_x                  ERROR     100.0",
        "-        test_helper                     FAILED      3.0",
        "1/3 passed in 115.3 s",
    ]


def test_table_puts_claims_in_numeric_order_then_the_rest_in_run_order() -> None:
    rows = [
        Row("-", "test_z_extra", "passed", 1.0),
        Row("claim10", "test_claim10_b", "passed", 1.0),
        Row("claim2", "test_claim2_x[native]", "passed", 1.0),
        Row("-", "test_a_extra", "passed", 1.0),
        Row("claim2", "test_claim2_x[acpi]", "passed", 1.0),
        Row("claim1", "test_claim1_a", "passed", 1.0),
    ]
    order = [line.split()[1] for line in table(rows).splitlines()[2:-1]]
    assert order == [
        "test_claim1_a",
        "test_claim2_x[native]",
        "test_claim2_x[acpi]",
        "test_claim10_b",
        "test_z_extra",
        "test_a_extra",
    ]
    assert rows[0].test == "test_z_extra"  # the caller's list is left alone


def test_table_columns_line_up() -> None:
    rows = [
        Row("claim1", "test_claim1_a", "passed", 0.04),
        Row("claim2", "t", "skipped", 1234.5),
    ]
    lines = table(rows).splitlines()
    body = lines[:-1]
    assert len({len(line) for line in body}) == 1  # seconds right-aligned to one edge
    starts = [lines[0].index(h) for h in ("test", "result")]
    for line in body[2:]:
        for start in starts:
            assert line[start - 2 : start] == "  " and line[start] != " "
    assert lines[2].endswith(" 0.0")
    assert lines[3].endswith("1234.5")
    assert lines[-1] == "1/2 passed in 1234.5 s"


def test_table_of_nothing() -> None:
    assert table([]).splitlines() == [
        "claim  test  result  seconds",
        "-----  ----  ------  -------",
        "0/0 passed in 0.0 s",
    ]


# ---- pytest argv -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _real_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def test_pytest_args_defaults() -> None:
    args = parser().parse_args(["run"])
    assert pytest_args(args) == [
        str(SUITE),
        "-p",
        "no:cacheprovider",
        "-q",
        "--testbed-artifacts=testbed-artifacts",
        "-o",
        "junit_family=xunit1",
    ]
    assert SUITE.name == "p2p" and SUITE.parent.name == "tests"


def test_pytest_args_pass_every_option_on() -> None:
    args = parser().parse_args(
        [
            "run",
            "--junit",
            "out/results.xml",
            "-k",
            "claim1 or claim2",
            "--accel",
            "tcg",
            "--artifacts",
            "/tmp/arts",
            "--keep-artifacts",
            "--kernel",
            "/k/bzImage",
            "--modules",
            "/k/lib/modules/6.9.0",
            "--build",
            "/k/build",
            "--boot-timeout",
            "45",
        ]
    )
    assert pytest_args(args) == [
        str(SUITE),
        "-p",
        "no:cacheprovider",
        "-q",
        "--testbed-artifacts=/tmp/arts",
        "-o",
        "junit_family=xunit1",
        "--testbed-keep-artifacts",
        "--junitxml=out/results.xml",
        "-k",
        "claim1 or claim2",
        "--testbed-kernel=/k/bzImage",
        "--testbed-modules=/k/lib/modules/6.9.0",
        "--testbed-build=/k/build",
        "--testbed-accel=tcg",
        "--testbed-boot-timeout=45.0",
    ]


def test_pytest_args_from_a_plain_namespace() -> None:
    import argparse

    args = argparse.Namespace(
        artifacts=Path("a"),
        keep_artifacts=False,
        junit=None,
        keyword="not slow",
        kernel=None,
        modules=None,
        build=None,
        accel="kvm",
        machine="switch",
    )
    assert pytest_args(args)[-4:] == [
        "-k",
        "not slow",
        "--testbed-accel=kvm",
        "--testbed-machine=switch",
    ]


class _Group:
    def __init__(self) -> None:
        self.options: dict[str, dict[str, Any]] = {}

    def addoption(self, *names: str, **kwargs: Any) -> None:
        for name in names:
            self.options[name] = kwargs


class _Parser:
    def __init__(self) -> None:
        self.group = _Group()

    def getgroup(self, name: str, description: str = "") -> _Group:
        return self.group


def test_every_testbed_option_passed_on_is_one_the_plugin_knows() -> None:
    fake = _Parser()
    settings.add_options(fake)  # type: ignore[arg-type]
    known = fake.group.options
    args = parser().parse_args(
        [
            *("run", "--keep-artifacts", "--accel", "auto"),
            *("--kernel", "k", "--modules", "m", "--build", "b", "--boot-timeout", "9"),
            *("--machine", "switch"),
        ]
    )
    passed = [a.split("=", 1)[0] for a in pytest_args(args) if a.startswith("--testbed-")]
    assert len(passed) == 8
    for name in passed:
        assert name in known, name
    assert set(known["--testbed-accel"]["choices"]) == {"auto", "kvm", "tcg"}


def test_run_is_registered_with_its_main() -> None:
    assert parser().parse_args(["run"]).func is run_cmd.main


@pytest.mark.parametrize("bad", ["0", "-3", "soon", "inf", "nan"])
def test_boot_timeout_must_be_positive_seconds(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["run", "--boot-timeout", bad])
    assert info.value.code == 2
    assert "--boot-timeout" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "tail"), [("boot", []), ("exec", ["--", "true"])])
def test_boot_timeout_default_is_the_machines(command: str, tail: list[str]) -> None:
    from testbed.cli.common import boot_timeout_from
    from testbed.qemu.machine import BOOT_TIMEOUT

    assert boot_timeout_from(parser().parse_args([command, *tail])) == BOOT_TIMEOUT
    given = parser().parse_args([command, "--boot-timeout", "7", *tail])
    assert boot_timeout_from(given) == 7.0


# ---- interrupted runs ------------------------------------------------------------------------


def test_a_test_stopped_after_its_setup_is_interrupted_not_passed() -> None:
    c = Collector()
    c.pytest_runtest_logstart(NODE, ("f", 1, "t"))
    feed(c, NODE, ("setup", "passed", 0.5))  # the call never reported: the signal came
    c.interrupted()
    assert c.rows[NODE].result == "interrupted"
    assert "(1 interrupted)" in table(list(c.rows.values()))


def test_a_test_stopped_before_any_report_still_gets_a_row() -> None:
    c = Collector()
    c.pytest_runtest_logstart(NODE, ("f", 1, "t"))
    c.interrupted()
    assert c.rows[NODE].result == "interrupted"


def test_finished_tests_are_not_marked_interrupted() -> None:
    c = Collector()
    c.pytest_runtest_logstart(NODE, ("f", 1, "t"))
    feed(c, NODE, ("setup", "passed", 0.1), ("call", "passed", 1.0), ("teardown", "passed", 0.1))
    c.pytest_runtest_logfinish(NODE, ("f", 1, "t"))
    c.interrupted()
    assert c.rows[NODE].result == "passed"


# ---- parallel workers and shards -------------------------------------------------------------


def test_jobs_and_shard_become_xdist_and_plugin_arguments() -> None:
    args = parser().parse_args(["run", "-j", "2", "--shard", "2/3"])
    argv = pytest_args(args)
    assert argv[argv.index("-n") : argv.index("-n") + 4] == ["-n", "2", "--dist", "loadgroup"]
    assert "--testbed-shard=2/3" in argv
    assert argv[argv.index("junit_suite_name=p2p-testbed-shard-2-of-3") - 1] == "-o"


def test_snapshot_is_the_default_and_no_snapshot_is_passed_on() -> None:
    assert "--testbed-no-snapshot" in pytest_args(parser().parse_args(["run", "--no-snapshot"]))
    assert "--testbed-no-snapshot" not in pytest_args(parser().parse_args(["run"]))
    assert "--testbed-no-snapshot" not in pytest_args(parser().parse_args(["run", "--snapshot"]))


def test_one_job_and_no_shard_add_nothing() -> None:
    argv = pytest_args(parser().parse_args(["run", "-j", "1"]))
    assert "-n" not in argv and not any("shard" in a for a in argv)


@pytest.mark.parametrize(
    ("option", "bad"), [("-j", "0"), ("-j", "two"), ("--shard", "3/2"), ("--shard", "1-2")]
)
def test_bad_jobs_or_shard_is_a_usage_error(
    option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["run", option, bad])
    assert info.value.code == 2
    assert option in capsys.readouterr().err


def test_collector_rows_come_from_xdist_workers(pytester: pytest.Pytester) -> None:
    """Under -n the controller's pytest_runtest_logreport sees every worker's reports."""
    pytester.makepyfile(
        """
        import pytest
        def test_claim3_ok(): pass
        def test_fails(): assert False
        @pytest.mark.skip
        def test_skipped(): pass
        """
    )
    collector = Collector()
    result = pytester.runpytest_inprocess("-n", "2", plugins=[collector])
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    by_test = {row.test: (row.claim, row.result) for row in collector.rows.values()}
    assert by_test == {
        "test_claim3_ok": ("claim3", "passed"),
        "test_fails": ("-", "FAILED"),
        "test_skipped": ("-", "skipped"),
    }
    assert collector.running == set()


def test_interrupted_marks_every_running_test() -> None:
    collector = Collector()
    collector.pytest_runtest_logstart("t.py::a", None)
    collector.pytest_runtest_logstart("t.py::b", None)
    collector.pytest_runtest_logstart("t.py::c", None)
    collector.pytest_runtest_logfinish("t.py::c", None)
    collector.interrupted()
    assert {r.test: r.result for r in collector.rows.values()} == {
        "a": "interrupted",
        "b": "interrupted",
    }


def test_a_failed_clean_up_after_a_signal_still_reports_the_signal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pytest catches the KeyboardInterrupt itself, then a fixture finalizer fails (an SSH
    channel the interrupt cut) and that error leaves pytest.main: still exit 143, table shown."""

    def fake_main(argv: list[str], plugins: list[object]) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises KeyboardInterrupt long before this ends
        except KeyboardInterrupt:
            pass
        raise GuestUnreachable("cannot open an SSH channel for 'echo Y > ...': Unable to open")

    monkeypatch.setattr(pytest, "main", fake_main)
    args = parser().parse_args(["run"])
    assert run_main(args) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "clean-up after the signal: cannot open an SSH channel" in err
    assert "interrupted by SIGTERM" in err


def test_a_testbed_error_without_a_signal_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_main(argv: list[str], plugins: list[object]) -> int:
        raise GuestUnreachable("boom")

    monkeypatch.setattr(pytest, "main", fake_main)
    with pytest.raises(GuestUnreachable, match="boom"):
        run_main(parser().parse_args(["run"]))
