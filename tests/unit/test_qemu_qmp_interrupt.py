"""The QMP facade (testbed.qemu.qmp) under Ctrl-C: nothing asyncio complains about later.

A KeyboardInterrupt raised by a signal handler lands in the middle of the facade's event loop
(here: while it waits for QEMU to connect; no QEMU is started). The facade must cancel and
drain what it left pending, so that asyncio never logs "Task exception was never retrieved"
or "Task was destroyed but it is pending" -- the ~300 lines seen after Ctrl-C.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from testbed.deadline import Deadline
from testbed.qemu.qmp import QMP


@pytest.fixture
def alarm_interrupts() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.usefixtures("alarm_interrupts")
def test_ctrl_c_while_waiting_for_qemu_leaves_no_pending_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qmp = QMP(tmp_path / "qmp.log")
    qmp.listen(tmp_path / "qmp.sock")
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with caplog.at_level("DEBUG", logger="asyncio"), pytest.raises(KeyboardInterrupt):
        qmp.accept(Deadline(10, "QEMU to connect"), lambda: True)
    with caplog.at_level("DEBUG", logger="asyncio"):
        qmp.close()
        del qmp
        gc.collect()
    noise = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelname in ("ERROR", "WARNING")
    ]
    assert not noise, noise
