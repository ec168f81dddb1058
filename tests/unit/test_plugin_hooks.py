"""The plugin's options, markers, fixtures list and artifact-folder policy, run through a real
pytest session (pytester) with no guest involved: these are pure logic.

The plugin reaches pytester's sessions the way it reaches a user's: through the ``pytest11``
entry point of the installed package.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# A test that uses the artifact folder without booting anything, and writes into it.
USES_FOLDER = """
def test_passes(artifact_dir):
    (artifact_dir / "note.txt").write_text("x")

def test_fails(artifact_dir):
    (artifact_dir / "note.txt").write_text("x")
    assert False, "on purpose"
"""


def test_public_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    out = pytester.runpytest("--fixtures").stdout.str()
    for name in (
        "vm",
        "machine_factory",
        "artifact_dir",
        "testbed_kernel",
        "testbed_settings",
        "p2p_payload",
        "p2p_vm",
        "fresh_p2p_vm",
    ):
        assert f"\n{name}" in out or out.startswith(name), f"fixture {name} not offered"


def test_options_are_in_help(pytester: pytest.Pytester) -> None:
    out = pytester.runpytest("--help").stdout.str()
    for option in (
        "--testbed-kernel",
        "--testbed-accel",
        "--testbed-boot-timeout",
        "--testbed-artifacts",
        "--testbed-keep-artifacts",
    ):
        assert option in out


@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_boot_timeout_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(f"--testbed-boot-timeout={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--testbed-boot-timeout must be positive, got {value}*"])


def test_report_header_names_kernel_accel_and_artifacts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--testbed-accel=tcg", f"--testbed-artifacts={pytester.path}/a")
    result.stdout.fnmatch_lines(
        [
            "testbed: kernel Debian stock (cached); accel tcg; machine default",
            f"testbed: artifacts in {pytester.path}/a (kept for failures)",
        ]
    )
    assert result.ret == 0


def test_console_allows_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from testbed.guest.console import Problem

        @pytest.mark.console_allows(Problem.WARNING)
        def test_marked(): pass
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_artifact_folder_kept_for_a_failure_removed_for_a_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_folders=USES_FOLDER)
    artifacts = pytester.path / "arts"
    result = pytester.runpytest(f"--testbed-artifacts={artifacts}")
    result.assert_outcomes(passed=1, failed=1)
    assert sorted(p.name for p in artifacts.iterdir()) == ["test_folders.py--test_fails"]
    assert (artifacts / "test_folders.py--test_fails" / "note.txt").read_text() == "x"
    result.stdout.fnmatch_lines(["*testbed artifacts*", "*artifacts kept for 1 test(s)*"])


def test_keep_artifacts_keeps_passes_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_folders=USES_FOLDER)
    artifacts = pytester.path / "arts"
    pytester.runpytest(f"--testbed-artifacts={artifacts}", "--testbed-keep-artifacts")
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "test_folders.py--test_fails",
        "test_folders.py--test_passes",
    ]


def test_artifact_folder_is_emptied_at_the_start(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_sees_empty(artifact_dir):
            assert list(artifact_dir.iterdir()) == []
            assert artifact_dir.stat().st_mode & 0o777 == 0o700
        """
    )
    stale = pytester.path / "arts" / "test_sees_empty.py--test_sees_empty"
    stale.mkdir(parents=True)
    (stale / "old-console.log").write_text("from an earlier run")
    result = pytester.runpytest(f"--testbed-artifacts={pytester.path / 'arts'}")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("options", "snapshot"),
    [((), True), (("--testbed-no-snapshot",), False), (("--testbed-snapshot",), True)],
)
def test_snapshot_reuse_is_on_unless_no_snapshot(
    pytester: pytest.Pytester, options: tuple[str, ...], snapshot: bool
) -> None:
    pytester.makepyfile(
        f"""
        def test_setting(testbed_settings):
            assert testbed_settings.snapshot is {snapshot}
        """
    )
    assert pytester.runpytest(*options).ret == pytest.ExitCode.OK
