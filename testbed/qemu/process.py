"""Starting and stopping QEMU processes so that none outlives the orchestrator.

QEMU runs in a session (and so a process group) of its own: Ctrl-C in the terminal reaches only
the orchestrator, which shuts the machine down in order; killing the group takes any helper
QEMU forked with it. A :class:`Reaper` (see :mod:`testbed.qemu.reaper`) kills the group and
removes registered files if the orchestrator itself dies without cleaning up.

Nothing runs before the reaper knows it: QEMU is started as a small shell that waits for a
"go" on its stdin and only then ``exec``s QEMU (same pid, same process group). The group is
registered with the reaper first; an orchestrator killed in between closes the pipe, and the
shell exits without QEMU ever running. Temporary folders (:func:`reaped_tempdir`) are
registered before they are created.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def reaped_tempdir(prefix: str) -> Iterator[Path]:
    """A new private (0700) folder in the temporary folder, removed on exit -- and by the
    reaper should the orchestrator die first (see :func:`new_reaped_dir`)."""
    path = new_reaped_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        Reaper.get().forget_path(path)


def new_reaped_dir(prefix: str) -> Path:
    """Create a private (0700) folder in the temporary folder, registered with the reaper
    before it exists (so it never exists unknown to the reaper); the caller removes it and
    tells the reaper to forget it."""
    reaper = Reaper.get()
    base = Path(tempfile.gettempdir())
    while True:
        path = base / f"{prefix}{secrets.token_hex(6)}"
        reaper.remove_on_exit(path)
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:  # not ours: leave it alone
            reaper.forget_path(path)


#: Run as ``sh -c _GATE qemu args...``: wait for one line on stdin, then become QEMU. EOF
#: instead (the orchestrator died before it registered the group) exits without running it.
_GATE = 'read -r go && [ "$go" = go ] && exec "$0" "$@" </dev/null; exit 125'


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
                    ["/bin/sh", "-c", _GATE, *self.argv],
                    stdin=subprocess.PIPE,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LaunchError(
                    f"cannot start QEMU: {exc.strerror}",
                    argv=self.argv,
                    exitcode=None,
                    log_tail="",
                ) from exc
        # The group (pid == pgid: a new session) is known to the reaper before QEMU runs.
        self._reaper.kill_on_exit(self._proc.pid)
        self._reaped = False
        gate = self._proc.stdin
        assert gate is not None
        try:
            gate.write(b"go\n")
            gate.close()
        except OSError as exc:  # the shell is gone already
            raise self.launch_error(f"cannot start QEMU: {exc}") from exc

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
