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


# --- nothing exists unknown to the reaper, even for a moment ---------------------------------

GATE_CHILD = r"""
import os, signal, sys
from pathlib import Path
from testbed.qemu import process

# The orchestrator dies at the worst moment: right as it registers QEMU with the reaper.
def die(pgid):
    print("SPAWNED", pgid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

process.Reaper.get().kill_on_exit = die
argv = [process.find_qemu(), "-machine", "none", "-nodefaults", "-display", "none"]
process.QemuProcess([*argv, "-name", sys.argv[1]], Path(sys.argv[2]))
print("NOT REACHED", flush=True)
"""


def _qemu_named(name: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if name.encode() in argv and b"qemu" in argv[0]:
                found.append(int(proc.name))
    return found


def test_qemu_never_runs_before_the_reaper_knows_its_group(tmp_path: Path) -> None:
    """Killed between spawning QEMU and registering it, the orchestrator leaves no QEMU:
    the process does not become QEMU until the registration is done."""
    name = f"gate-test-{os.getpid()}"
    child = subprocess.run(
        [sys.executable, "-c", GATE_CHILD, name, str(tmp_path / "stderr.log")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "SPAWNED" in child.stdout
    pgid = int(child.stdout.split()[1])
    try:
        # give a QEMU that slipped through every chance to show up, then require none
        wait_for(
            lambda: not _alive(pgid),
            Deadline(10, "the gate to exit"),
            doing=f"process {pgid} to exit without running QEMU",
        )
        assert not _qemu_named(name), "QEMU ran although the orchestrator never registered it"
    finally:
        for pid in _qemu_named(name):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_during_boot_leaves_no_temporary_folder(
    tmp_path: Path, testbed_settings: Settings
) -> None:
    """``testbed boot`` killed outright while QEMU boots: its /tmp/p2p-testbed-boot-* and
    private folders go too (TMPDIR points the child's temporary folders here)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    testbed = str(Path(sys.executable).parent / "testbed")
    accel = ["--accel", testbed_settings.accel.value] if testbed_settings.accel else []
    child = subprocess.Popen(
        [testbed, "boot", "--no-p2p", *accel],
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: bool(list(tmp.glob("p2p-testbed-boot-*/console.log"))),
            Deadline(120, "the boot to start QEMU"),
            doing="waiting for the guest's console log",
        )
        assert child.poll() is None, "testbed boot ended early"
        folders = sorted(p.name for p in tmp.iterdir())
        assert any(f.startswith("p2p-testbed-boot-") for f in folders), folders
        child.kill()
        child.wait(timeout=30)
        wait_for(
            lambda: not any(tmp.iterdir()),
            Deadline(15, "the reaper to clean up"),
            doing=f"{tmp} to be emptied (left: {sorted(p.name for p in tmp.iterdir())})",
        )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
