"""Bad input to the command line ends at once, exit code 2, with a message naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.cli import main


def test_missing_kernel_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "--no-p2p", "--kernel", "/nonexistent/bzImage"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent/bzImage: kernel image not found" in err
    assert "Traceback" not in err


def test_malformed_machine_yaml_names_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmemory: 1G\nmemroy: 2G\ndevices: []\n")
    assert main(["boot", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: memroy: unknown key" in err


def test_unknown_device_type_lists_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndevices:\n  - id: a\n    type: gpu-exportr\n")
    assert main(["bench", "--machine", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown device type 'gpu-exportr'; known: gpu-exporter, importer" in err


def test_unknown_machine_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "no-such-machine"]) == 2
    assert (
        "known: default, default-qemu64, native-hotplug, switch, switch-native"
        in capsys.readouterr().err
    )
