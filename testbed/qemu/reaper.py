"""A watchdog process that cleans up after the orchestrator, however the orchestrator dies.

The orchestrator starts one reaper (``python -m testbed.qemu.reaper``) in a session of its own
and keeps the write end of a pipe to its stdin. It registers what must not outlive it::

    kill <pgid>       a QEMU process group
    rm <path>         a file or folder (private socket folder, BAR backing file)
    forget <item>     the orchestrator cleaned that itself

When the pipe reaches end-of-file -- a clean exit, an exception, Ctrl-C, or SIGKILL of the
orchestrator alike -- the reaper kills every process group still registered and removes every
path still registered, then exits. It ignores SIGINT and SIGHUP so that Ctrl-C in the terminal
reaches the orchestrator (which cleans up in order) and not the reaper.

This module must stay import-light: it runs as a separate interpreter for each orchestrator.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(100):  # up to 1 s for the group to go
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: set[int] = set()
    files: set[str] = set()
    for raw in sys.stdin:
        verb, _, arg = raw.rstrip("\n").partition(" ")
        if verb == "kill":
            groups.add(int(arg))
        elif verb == "rm":
            files.add(arg)
        elif verb == "forget":
            kind, _, what = arg.partition(" ")
            if kind == "kill":
                groups.discard(int(what))
            else:
                files.discard(what)
    for pgid in groups:
        _kill_group(pgid)
    for path in files:
        _remove(path)


if __name__ == "__main__":
    main()
