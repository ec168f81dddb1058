"""Starting and stopping QEMU processes so that none outlives the orchestrator.

QEMU runs in a session (and so a process group) of its own: Ctrl-C in the terminal reaches only
the orchestrator, which shuts the machine down in order; killing the group takes any helper
QEMU forked with it. A :class:`Reaper` (see :mod:`testbed.qemu.reaper`) kills the group and
removes registered files if the orchestrator itself dies without cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, ClassVar

from testbed.errors import DependencyError, LaunchError

log = logging.getLogger(__name__)


class Reaper:
    """The process-wide cleanup watchdog; one per orchestrator process, started lazily."""

    _instance: ClassVar[Reaper | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        # Run by file name, isolated (-I) and without site-packages (-S): the reaper needs only
        # the standard library, starts faster so, and works the same from a checkout and from
        # an installed wheel.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("reaper.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            cwd="/",
        )
        self._owner = os.getpid()
        assert self._proc.stdin is not None
        self._pipe: IO[str] = self._proc.stdin
        atexit.register(self._close)

    @classmethod
    def get(cls) -> Reaper:
        with cls._lock:
            if cls._instance is None or cls._instance._owner != os.getpid():
                cls._instance = Reaper()
            return cls._instance

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        try:
            self._pipe.write(line + "\n")
            self._pipe.flush()
        except (BrokenPipeError, ValueError):
            log.warning("the cleanup watchdog is gone; cleaning up without it")

    def kill_on_exit(self, pgid: int) -> None:
        self._send(f"kill {pgid}")

    def remove_on_exit(self, path: Path) -> None:
        self._send(f"rm {path}")

    def forget_group(self, pgid: int) -> None:
        self._send(f"forget kill {pgid}")

    def forget_path(self, path: Path) -> None:
        self._send(f"forget rm {path}")

    def _close(self) -> None:
        try:
            self._pipe.close()
            self._proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def find_qemu(binary: str = "qemu-system-x86_64") -> str:
    from shutil import which

    path = which(binary)
    if path is None:
        raise DependencyError(
            f"{binary} not found; install it with 'apt-get install qemu-system-x86' "
            "(or run ci/setup.sh)"
        )
    return path


class QemuProcess:
    """One QEMU process in its own session, with stderr captured to a file."""

    def __init__(self, argv: Sequence[str], stderr_log: Path) -> None:
        self.argv = list(argv)
        self.stderr_log = stderr_log
        self._reaper = Reaper.get()
        with stderr_log.open("ab") as err:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LaunchError(
                    f"cannot execute QEMU: {exc.strerror}",
                    argv=self.argv,
                    exitcode=None,
                    log_tail="",
                ) from exc
        self._reaper.kill_on_exit(self._proc.pid)
        self._reaped = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.stderr_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def launch_error(self, message: str) -> LaunchError:
        return LaunchError(message, argv=self.argv, exitcode=self.poll(), log_tail=self.log_tail())

    def terminate(self, grace: float = 3.0) -> int | None:
        """SIGTERM the group, then SIGKILL it after ``grace`` seconds. Idempotent."""
        if self._reaped:
            return self._proc.returncode
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self._proc.poll() is not None:
                break
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            if self.wait(wait) is not None:
                break
        # The group may hold children even after QEMU itself exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        code = self.wait(5.0)
        self._reaper.forget_group(self._proc.pid)
        self._reaped = True
        return code
