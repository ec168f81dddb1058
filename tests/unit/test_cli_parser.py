"""The ``testbed`` command line (testbed.cli.parser / main): subcommands and their options.

Only argument parsing runs here; no subcommand's ``main`` is called.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from testbed.cli import bench, boot, doctor, execute, kernel, main, parser, run
from testbed.errors import ConfigError


@pytest.fixture(autouse=True)
def _real_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    return info.value.code


def test_run_options() -> None:
    args = parser().parse_args(
        ["run", "--junit", "r.xml", "-k", "claim3 and not native", "--accel", "tcg"]
    )
    assert args.command == "run"
    assert args.func is run.main
    assert args.junit == Path("r.xml")
    assert args.keyword == "claim3 and not native"
    assert args.accel == "tcg"
    assert args.verbose is False
    assert args.kernel is None and args.modules is None and args.build is None
    assert args.artifacts == Path("testbed-artifacts")
    assert args.keep_artifacts is False


def test_run_defaults() -> None:
    args = parser().parse_args(["run"])
    assert args.junit is None
    assert args.keyword is None
    assert args.accel is None


def test_boot_options() -> None:
    args = parser().parse_args(["boot"])
    assert args.func is boot.main
    assert args.machine == "default"
    assert args.no_p2p is False
    assert args.run_dir is None
    args = parser().parse_args(
        [
            *("-v", "boot", "native-hotplug", "--no-p2p", "--run-dir", "/tmp/r", "--accel", "kvm"),
            *("--kernel", "/k/bzImage", "--modules", "/k/mods", "--build", "/k/build"),
        ]
    )
    assert args.verbose is True
    assert args.machine == "native-hotplug"
    assert args.no_p2p is True
    assert args.run_dir == Path("/tmp/r")
    assert args.accel == "kvm"
    assert (args.kernel, args.modules, args.build) == (
        "/k/bzImage",
        Path("/k/mods"),
        Path("/k/build"),
    )


def test_boot_help_lists_the_machines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no line breaks inside machine names
    assert exit_code(["boot", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(known: default, default-qemu64, native-hotplug, switch, switch-native" in out


def test_doctor_options() -> None:
    args = parser().parse_args(["doctor"])
    assert args.func is doctor.main
    assert (args.json, args.probe_kvm) == (False, False)
    args = parser().parse_args(["doctor", "--json", "--probe-kvm"])
    assert (args.json, args.probe_kvm) == (True, True)


def test_bench_options() -> None:
    args = parser().parse_args(["bench", "--runs", "2", "--json"])
    assert args.func is bench.main
    assert args.runs == 2
    assert args.json is True
    assert args.machine == "default"
    assert args.device == "gpu-exporter"
    args = parser().parse_args(["bench", "--accel", "auto", "--device", "importer"])
    assert args.runs == 5  # the default: medians of five paired runs
    assert args.json is False
    assert args.accel == "auto"
    assert args.device == "importer"


@pytest.mark.parametrize("command", ["run", "boot", "bench"])
@pytest.mark.parametrize("value", ["xen", "KVM", "hvf", ""])
def test_unknown_accel_is_rejected(
    command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code([command, "--accel", value]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],  # a subcommand is required
        ["fly"],
        ["bench", "--runs", "two"],
        ["run", "--junit"],
        ["doctor", "--kernel", "x"],  # doctor boots nothing
        ["run", "--no-p2p"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(argv) == 2
    assert "usage: testbed" in capsys.readouterr().err


def test_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"p2p-testbed {metadata.version('p2p-testbed')}"


def test_help_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "exec", "boot", "kernel", "doctor", "bench"):
        assert command in out


def test_exec_options_and_command() -> None:
    args = parser().parse_args(
        ["exec", "--kernel", ".", "--machine", "native-hotplug", "--keep", "--", "ls", "-l"]
    )
    assert args.func is execute.main
    assert args.kernel == "."
    assert args.machine == "native-hotplug"
    assert args.keep is True and args.no_p2p is False
    assert args.timeout == 3600.0
    assert execute.guest_command(args.command) == "ls -l"


def test_exec_defaults() -> None:
    args = parser().parse_args(["exec", "--", "true"])
    assert args.machine == "default"
    assert args.keep is False
    assert args.run_dir is None
    assert execute.guest_command(args.command) == "true"


@pytest.mark.parametrize(
    ("words", "command"),
    [
        (["--", "dmesg | tail -3"], "dmesg | tail -3"),  # one word: the guest's shell parses it
        (["printf", "%s|", "a b", "$HOME"], "printf '%s|' 'a b' '$HOME'"),  # several: quoted
        (["true"], "true"),
        (["--", "--", "x"], "-- x"),  # only the first '--' separates
    ],
)
def test_exec_guest_command(words: list[str], command: str) -> None:
    assert execute.guest_command(words) == command


@pytest.mark.parametrize("words", [[], ["--"]])
def test_exec_without_a_command_is_a_config_error(words: list[str]) -> None:
    with pytest.raises(ConfigError, match="no command given"):
        execute.guest_command(words)


def test_exec_without_a_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--no-p2p"]) == 2
    assert "no command given" in capsys.readouterr().err


def test_kernel_update_options() -> None:
    args = parser().parse_args(["kernel", "update"])
    assert args.func is kernel.update_main
    assert args.flavour is None
    assert parser().parse_args(["kernel", "update", "--flavour", "amd64"]).flavour == "amd64"


def test_kernel_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["kernel"]) == 2
    assert "update" in capsys.readouterr().err


def test_bench_exec_command_forwards_the_kernel_options() -> None:
    args = parser().parse_args(
        ["bench", "--kernel", "/k", "--accel", "tcg", "--machine", "native-hotplug"]
    )
    argv = bench.exec_argv(args)
    assert argv[-2:] == ["--", "true"]
    assert argv[argv.index("exec") + 1 :] == [
        "--machine", "native-hotplug", "--kernel", "/k", "--accel", "tcg", "--", "true",
    ]  # fmt: skip
