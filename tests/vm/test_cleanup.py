"""Nothing leaks: not after Ctrl-C, not after the orchestrator is killed outright.

A child Python process boots a machine and reports its QEMU pid, private folder and BAR
backing file; the test then interrupts or kills it and checks all three are gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.deadline import Deadline, wait_for
from testbed.pytest_plugin.settings import Settings

CHILD = r"""
import sys, time
from pathlib import Path
from testbed.config.schema import Accel
from testbed.devices.registry import load_machine
from testbed.kernel.stock import stock_kernel
from testbed.qemu.machine import Machine

accel = Accel(sys.argv[2]) if sys.argv[2] != "-" else None
with Machine(load_machine("default"), stock_kernel(), Path(sys.argv[1]), accel=accel) as vm:
    print("READY", vm.process.pid, vm.private_dir, vm.backing_file("gpu-exporter"), flush=True)
    while True:
        time.sleep(1)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes; it is not ours to reap
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name
)
def test_no_qemu_or_files_left_when_orchestrator_stops(
    tmp_path: Path, testbed_settings: Settings, how: signal.Signals
) -> None:
    accel = testbed_settings.accel.value if testbed_settings.accel else "-"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "run"), accel],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        assert line.startswith("READY"), f"child did not boot: {line!r} {child.stderr.read()}"
        _, pid, private, backing = line.split()
        qemu_pid = int(pid)
        assert _alive(qemu_pid)
        assert Path(private).is_dir()
        assert Path(backing).is_file()

        child.send_signal(how)
        child.wait(timeout=30)
        deadline = Deadline(15, "clean-up after the orchestrator stopped")
        wait_for(lambda: not _alive(qemu_pid), deadline, doing=f"QEMU {qemu_pid} to exit")
        wait_for(lambda: not Path(private).exists(), deadline, doing=f"{private} removal")
        wait_for(lambda: not Path(backing).exists(), deadline, doing=f"{backing} removal")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
