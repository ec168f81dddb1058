"""``testbed run`` stopped by a signal, and refusing a bad kernel, as a CI system sees it.

``testbed run`` runs in a subprocess on a real guest and gets SIGINT or SIGTERM in the middle
of a test: it must tear the guest down, print the table with that test ``interrupted``,
still write the JUnit file, exit 128 + the signal, and print none of asyncio's
"Task exception was never retrieved".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.deadline import Deadline, wait_for
from testbed.pytest_plugin.settings import Settings

TESTBED = str(Path(sys.executable).parent / "testbed")
READY = "testbed-guest: ready"


def _accel(settings: Settings) -> list[str]:
    return ["--accel", settings.accel.value] if settings.accel else []


def _qemu_pids_using(folder: Path) -> list[int]:
    """QEMU processes whose command line mentions ``folder`` (the run's artifacts)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"qemu-system-x86_64")
            and str(folder).encode() in b" ".join(argv)
        ):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize(
    ("how", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_run_stopped_by_a_signal_cleans_up_and_reports(
    tmp_path: Path, testbed_settings: Settings, how: signal.Signals, code: int
) -> None:
    junit = tmp_path / "results.xml"
    artifacts = tmp_path / "artifacts"
    proc = subprocess.Popen(
        [
            TESTBED, "run", "-k", "claim2", "--junit", str(junit),
            "--artifacts", str(artifacts), *_accel(testbed_settings),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # Mid-test: the guest is up and ready, the claim's body is about to run or running.
        def guest_ready() -> bool:
            assert proc.poll() is None, "testbed run ended before the guest was up"
            return any(
                READY in p.read_text(errors="replace") for p in artifacts.rglob("console.log")
            )

        wait_for(guest_ready, Deadline(240, "the suite's guest to be ready"), doing="boot")
        qemu = _qemu_pids_using(artifacts)
        assert qemu, "no QEMU found for the run"
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(how)
        out, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    rows = [line.split() for line in out.splitlines() if line.startswith("claim2 ")]
    assert rows, f"no results table:\n{out[-3000:]}"
    assert rows[0][2] == "interrupted", rows
    assert "interrupted" in out.splitlines()[-1] or "(1 interrupted)" in out
    assert junit.is_file(), "the JUnit file must still be written"
    ET.parse(junit)  # and be well-formed
    for noise in ("Task exception was never retrieved", "Task was destroyed", "Traceback"):
        assert noise not in out + err, f"{noise!r} in the output:\n{err[-3000:]}"
    assert f"interrupted by {how.name}" in err
    deadline = Deadline(15, "QEMU to be gone")
    wait_for(
        lambda: not [p for p in qemu if os.path.exists(f"/proc/{p}")], deadline, doing="QEMU exit"
    )
    assert not list(artifacts.rglob("*.bar")), "BAR backing files must be removed"
    print(f"stopped in {stop_s:.1f} s after {how.name}")


def test_run_with_a_kernel_that_is_not_one_fails_in_one_line_before_pytest(
    tmp_path: Path,
) -> None:
    start = time.monotonic()
    out = subprocess.run(
        [TESTBED, "run", "--kernel", "/bin/true", "--artifacts", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines[:20]
    assert lines[0].startswith("testbed: error: ") and "/bin/true" in lines[0], lines
    assert not (tmp_path / "a").exists(), "pytest must not have started"
    assert time.monotonic() - start < 60
