"""A synchronous facade over :mod:`qemu.qmp` with a timeout on every call and a full log.

The facade owns one private asyncio event loop and runs it only inside its own calls, so the
rest of the testbed stays synchronous and single-threaded. Every command, reply and event goes
to ``qmp.log`` with a timestamp (events with QEMU's own timestamp, so an event drained late is
still logged at the time it happened).

QEMU connects to us: :meth:`QMP.listen` binds the socket before QEMU starts, and
:meth:`QMP.accept` waits for QEMU to connect (the scheme QEMU's own ``QEMUMachine`` uses), so
there is no connect-retry race.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient
from qemu.qmp.error import QMPError as LibQMPError
from qemu.qmp.message import Message

from testbed.deadline import Deadline
from testbed.errors import DeadlineExceeded, MachineDied, QMPError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Default bound for one QMP command.
COMMAND_TIMEOUT = 30.0


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="microseconds")


def event_time(event: Mapping[str, Any]) -> float:
    """An event's QEMU-side timestamp in seconds since the epoch."""
    ts = event.get("timestamp", {})
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


class QMP:
    """One QMP connection to one QEMU, with an event history the caller can search."""

    def __init__(self, log_path: Path, name: str = "testbed") -> None:
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        self._log: IO[str] = log_path.open("w", encoding="utf-8")
        self.events: list[dict[str, Any]] = []  #: every event received so far, in order
        self._closed = False

    # -- plumbing --------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        task = self._loop.create_task(asyncio.wait_for(coro, timeout))
        try:
            return self._loop.run_until_complete(task)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"QMP: {what} got no answer within {timeout:g} s") from exc
        except BaseException:
            # Ctrl-C / SIGTERM land here in the middle of the loop: the call's task is left
            # pending. Cancel and drain it now, so that nothing later reports "Task exception
            # was never retrieved" or "Task was destroyed but it is pending".
            self._drain([task])
            raise

    def _drain(self, tasks: list[asyncio.Task[Any]], timeout: float = 2.0) -> None:
        """Cancel ``tasks`` and run the loop until they finish (bounded), retrieving their
        results so asyncio has nothing to complain about. Never raises."""
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending and not self._loop.is_closed() and not self._loop.is_running():
            try:
                self._loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
            except BaseException as exc:  # a second signal: give up draining, keep going
                log.debug("QMP: draining tasks: %r", exc)
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # marks it retrieved

    def _write(self, direction: str, payload: object) -> None:
        self._log.write(f"{_now()} {direction} {json.dumps(payload, default=str)}\n")
        self._log.flush()

    def _record(self, msg: Message) -> None:
        event = dict(msg)
        stamp = dt.datetime.fromtimestamp(event_time(event)).isoformat(timespec="microseconds")
        self._log.write(f"{stamp} event {json.dumps(event, default=str)}\n")
        self._log.flush()
        self.events.append(event)

    def _pump(self) -> None:
        """Let the reader task run, then move queued events into the history and the log."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(asyncio.sleep(0))
        for msg in self._listener.clear():
            self._record(msg)

    # -- connection ------------------------------------------------------------------------

    def listen(self, socket_path: Path) -> None:
        self._run(self._client.start_server(str(socket_path)), 10, "binding the QMP socket")

    def accept(self, deadline: Deadline, alive: Callable[[], bool]) -> None:
        """Wait for QEMU to connect, giving up early if ``alive()`` turns false."""

        async def wait() -> None:
            task = asyncio.ensure_future(self._client.accept())
            while not task.done():
                if not alive():
                    task.cancel()
                    raise MachineDied("QEMU exited before connecting to QMP")
                await asyncio.wait({task}, timeout=0.05)
            task.result()

        try:
            self._run(wait(), deadline.remaining(), "waiting for QEMU to connect")
        except (EOFError, OSError, ConnectError) as exc:
            # QEMU connected and went away (it exits when an accelerator or device fails).
            raise MachineDied(
                f"QEMU closed the QMP connection during the handshake: {exc!r}"
            ) from exc
        self._write("greeting", self._client.greeting)

    # -- commands and events ---------------------------------------------------------------

    def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> Any:
        """Run one QMP command; :class:`QMPError` carries QEMU's error text."""
        sent: dict[str, object] = {"execute": command}
        if arguments:
            sent["arguments"] = dict(arguments)
        self._write(">>>", sent)
        try:
            reply = self._run(
                self._client.execute(command, dict(arguments) if arguments else None),
                timeout,
                command,
            )
        except ExecuteError as exc:
            self._write("<<<", {"error": {"class": exc.error_class, "desc": exc.error.error.desc}})
            raise QMPError(command, arguments or {}, exc.error.error.desc) from exc
        except (LibQMPError, ConnectionError, EOFError) as exc:
            self._write("!!!", str(exc))
            raise MachineDied(f"QMP connection lost during {command}: {exc}") from exc
        finally:
            self._pump()
        self._write("<<<", {"return": reply})
        return reply

    def hmp(self, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """A human-monitor command (for what QMP lacks, e.g. ``info usernet``)."""
        return str(self.execute("human-monitor-command", {"command-line": command}, timeout))

    def poll_events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (also appended to :attr:`events`)."""
        before = len(self.events)
        self._pump()
        return self.events[before:]

    def wait_event(
        self,
        match: Callable[[dict[str, Any]], bool],
        deadline: Deadline,
        *,
        since: int = 0,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any]:
        """The first event in :attr:`events` (from index ``since``) for which ``match`` holds.

        Waits for new events until ``deadline``; raises :class:`DeadlineExceeded` then, and
        :class:`MachineDied` if ``alive()`` turns false first.
        """
        checked = since
        while True:
            self._pump()
            for event in self.events[checked:]:
                if match(event):
                    return event
            checked = len(self.events)
            if not alive():
                raise MachineDied("QEMU exited while waiting for a QMP event")
            deadline.check("waiting for a QMP event")

            async def next_event() -> None:
                try:
                    msg = await asyncio.wait_for(
                        self._listener.get(), min(0.2, deadline.remaining())
                    )
                except TimeoutError:
                    return
                self._record(msg)

            self._loop.run_until_complete(next_event())

    def close(self) -> None:
        """Disconnect and close the log. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self._pump()
            self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 5))
        except Exception as exc:
            log.debug("QMP disconnect: %s", exc)
        finally:
            # Whatever qemu.qmp still has running (reader, writer, a half-done execute after
            # an interrupt): cancelled and drained before the loop goes.
            if not self._loop.is_closed():
                self._drain(list(asyncio.all_tasks(self._loop)))
                self._loop.close()
            self._log.close()
