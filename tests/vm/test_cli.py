"""The ``testbed`` command as a developer uses it, in a subprocess, against real QEMU."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from testbed.kernel.image import Kernel
from testbed.pytest_plugin.settings import Settings

TESTBED = str(Path(sys.executable).parent / "testbed")


def _accel(settings: Settings) -> list[str]:
    return ["--accel", settings.accel.value] if settings.accel else []


def test_boot_prints_a_working_ssh_command_and_cleans_up_on_ctrl_c(
    tmp_path: Path, testbed_settings: Settings, testbed_kernel: Kernel
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [TESTBED, "boot", "--no-p2p", "--run-dir", str(run_dir), *_accel(testbed_settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        info: dict[str, str] = {}
        for line in proc.stdout:
            key, sep, value = line.strip().partition(":")
            if sep and key in ("ssh", "QMP", "console", "run dir"):
                info[key] = value.strip()
            if line.startswith("Ctrl-C"):
                break
        assert "ssh" in info, f"no ssh line; stderr: {proc.stderr.read()}"
        ssh = subprocess.run(
            [*shlex.split(info["ssh"]), "uname -r"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == testbed_kernel.release
        qmp_socket = Path(info["QMP"].split()[0])
        assert qmp_socket.exists()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert not qmp_socket.parent.exists(), "the private folder must be removed"
        assert not list(run_dir.glob("*.bar")), "the BAR backing file must be removed"
        assert (run_dir / "console.log").is_file(), "artifacts stay"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_doctor_reports_a_ready_host() -> None:
    out = subprocess.run(
        [TESTBED, "doctor", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 0, out.stdout
    assert checks["qemu devices"]["ok"]
    assert "kvm" in checks


def test_bench_prints_one_json_object_with_the_figures(testbed_settings: Settings) -> None:
    out = subprocess.run(
        [TESTBED, "bench", "--json", "--runs", "1", *_accel(testbed_settings)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["accel"] in ("tcg", "kvm")
    for key in ("bare_boot_s", "boot_to_ssh_s", "unplug_s", "ratio"):
        assert result[key] > 0
    # one run: the paired ratio is that run's, the same as the ratio of the (single) medians
    assert abs(result["ratio"] - result["boot_to_ssh_s"] / result["bare_boot_s"]) < 0.01
    assert result["ratio"] == result["ratio_of_medians"]


def test_run_prints_the_claim_table_and_junit(tmp_path: Path, testbed_settings: Settings) -> None:
    junit = tmp_path / "results.xml"
    out = subprocess.run(
        [
            TESTBED,
            "run",
            "-k",
            "claim2",
            "--junit",
            str(junit),
            "--artifacts",
            str(tmp_path / "artifacts"),
            *_accel(testbed_settings),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("claim2 ")]
    assert rows and rows[0][2] == "passed"
    assert "1/1 passed" in out.stdout
    assert 'name="test_claim2' in junit.read_text()
