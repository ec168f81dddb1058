"""Running commands in the guest over SSH (paramiko), with a pinned host key.

:class:`GuestShell` is the small interface tests use (``run`` / ``run_check`` / ``write_file``);
:class:`SSHShell` implements it over SSH. Every call has a timeout; a guest that stops
answering raises instead of hanging.

paramiko itself waits without a bound in places: ``Channel.exec_command`` waits for the
server's reply to the exec request with a bare ``Event.wait()``, and ``sendall`` waits for
window space as long as the channel's timeout, ``None`` by default. So :meth:`SSHShell.run`
gives the channel a timeout and arms a timer that, should the command's deadline pass with
the call still stuck (a guest frozen, or a kernel that stopped scheduling sshd), shuts the
socket down and closes the transport: every paramiko wait then wakes with an error, and the
call raises :class:`DeadlineExceeded`. The connection is gone after that; the next call says
so at once.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from testbed.deadline import Deadline
from testbed.errors import DeadlineExceeded, GuestCommandError, GuestUnreachable

log = logging.getLogger(__name__)

#: Default bound for one command in the guest.
COMMAND_TIMEOUT = 60.0
WATCH_INTERVAL = 0.25  #: how often a running command's watchdog is called
#: How long after a command's deadline a call still stuck inside paramiko is cut off by
#: closing the transport (a command that merely runs long is stopped by the wait loop first,
#: within ``WATCH_INTERVAL``, and keeps the connection).
ABORT_GRACE = 1.0


@dataclass(frozen=True)
class CommandResult:
    command: str
    exitcode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exitcode == 0


class GuestShell(Protocol):
    """Something that runs shell commands in the guest: implement :meth:`run`; subclasses
    (the SSH shell, tests' fakes) inherit :meth:`run_check`."""

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult: ...

    def run_check(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        """Like :meth:`run`, but a non-zero exit raises :class:`GuestCommandError`."""
        result = self.run(command, timeout=timeout, stdin=stdin)
        if not result.ok:
            raise GuestCommandError(command, result.exitcode, result.stdout, result.stderr)
        return result


class SSHShell(GuestShell):
    """A paramiko connection to the guest's sshd, host key pinned."""

    def __init__(self, port: int, client_key: Path, host_public: str, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.user = "root"
        self._key = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        self._client_key_path = client_key
        kind, blob = host_public.split()[:2]
        self._host_key = paramiko.Ed25519Key(data=base64.b64decode(blob))
        if kind != "ssh-ed25519":
            raise ValueError(f"unexpected host key type {kind}")
        self._client: paramiko.SSHClient | None = None
        self.transcript: list[CommandResult] = []
        #: called while commands run; raises to abort the wait (see :meth:`run`)
        self.watchdog: Callable[[], None] | None = None

    def ssh_command(self, known_hosts: Path) -> str:
        """The ``ssh`` command line a developer can paste to reach this guest."""
        return shlex.join(
            [
                "ssh",
                "-i", str(self._client_key_path),
                "-p", str(self.port),
                "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "StrictHostKeyChecking=yes",
                f"{self.user}@{self.host}",
            ]
        )  # fmt: skip

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} ssh-ed25519 {self._host_key.get_base64()}\n"

    def connect(self, deadline: Deadline) -> None:
        """Connect, retrying while the guest's sshd is not up yet, until ``deadline``."""
        last: Exception | None = None
        while not deadline.expired():
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{self.host}]:{self.port}", "ssh-ed25519", self._host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            budget = max(1.0, deadline.cap(10.0))
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    pkey=self._key,
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=budget,
                    banner_timeout=budget,
                    auth_timeout=budget,
                )
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise GuestUnreachable(
                    f"the guest at {self.host}:{self.port} presented a host key other than the "
                    "one the testbed generated for it; refusing to connect"
                ) from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                last = exc
                time.sleep(deadline.cap(0.1))
                continue
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(5)
            self._client = client
            return
        raise GuestUnreachable(
            f"no SSH connection to the guest at {self.host}:{self.port} within "
            f"{deadline.seconds:g} s (last error: {last!r})"
        )

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``command`` with ``sh -c`` in the guest; returns exit code and both streams.

        While the command runs, :attr:`watchdog` (if set) is called every ``WATCH_INTERVAL``
        seconds: a machine sets it to its own health check, so a guest that panics under a
        command ends the wait at once with :class:`GuestPanic`, not at ``timeout``.
        """
        out, err = bytearray(), bytearray()
        start = time.monotonic()
        code = self.stream(command, out.extend, err.extend, timeout=timeout, stdin=stdin)
        result = CommandResult(
            command,
            code,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - start,
        )
        self.transcript.append(result)
        log.debug("guest$ %s -> %d (%.2f s)", command, code, result.seconds)
        return result

    def stream(
        self,
        command: str,
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        *,
        timeout: float = COMMAND_TIMEOUT,
        stdin: bytes | None = None,
    ) -> int:
        """Run ``command`` like :meth:`run`, handing each chunk of its stdout and stderr to
        ``on_stdout`` / ``on_stderr`` as it arrives; returns the exit status (-1 if the
        command was killed by a signal and sshd reported no status).

        The wait is bounded even where paramiko has no timeout of its own (``exec_command``,
        a ``sendall`` to a guest that reads nothing): a timer closes the transport
        ``ABORT_GRACE`` seconds after the deadline, which wakes every wait on it.
        """
        client = self._client
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            raise GuestUnreachable("not connected to the guest")
        deadline = Deadline(timeout, f"guest command {command!r}")
        aborted = threading.Event()
        timer = threading.Timer(timeout + ABORT_GRACE, _abort, (transport, aborted))
        timer.daemon = True
        timer.start()

        def stuck(exc: BaseException | None) -> DeadlineExceeded:
            return DeadlineExceeded(
                f"guest command did not finish within {timeout:g} s: {command}; the guest "
                "stopped answering over SSH (frozen or hung?), so the connection was closed"
                + (f" ({exc!r})" if exc is not None else "")
            )

        try:
            try:
                chan = transport.open_session(timeout=deadline.cap(30))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if aborted.is_set():
                    raise stuck(exc) from exc
                raise GuestUnreachable(
                    f"cannot open an SSH channel for {command!r}: {exc}"
                ) from exc

            def drain() -> None:
                while chan.recv_ready():
                    on_stdout(chan.recv(1 << 16))
                while chan.recv_stderr_ready():
                    on_stderr(chan.recv_stderr(1 << 16))

            try:
                # sendall and recv honour this; exec_command does not (the timer covers it).
                chan.settimeout(max(0.01, deadline.remaining()))
                chan.exec_command(command)
                if stdin is not None:
                    chan.settimeout(max(0.01, deadline.remaining()))
                    chan.sendall(stdin)
                chan.shutdown_write()
                while True:
                    select.select([chan], [], [], deadline.cap(WATCH_INTERVAL))
                    drain()
                    if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                        break
                    if deadline.expired():
                        raise DeadlineExceeded(
                            f"guest command did not finish within {timeout:g} s: {command}"
                        )
                    if self.watchdog is not None:
                        self.watchdog()
                drain()
                return chan.recv_exit_status()
            except DeadlineExceeded:
                raise  # a command that merely ran long: the connection is fine
            except TimeoutError as exc:  # socket.timeout from sendall/recv: the deadline
                _abort(transport, aborted)
                raise stuck(exc) from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if aborted.is_set():
                    raise stuck(exc) from exc
                raise GuestUnreachable(
                    f"SSH connection lost while running {command!r}: {exc}"
                ) from exc
            finally:
                chan.close()
        finally:
            timer.cancel()

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Create ``path`` in the guest with ``data`` (through ``cat``; no SFTP needed)."""
        quoted = shlex.quote(path)
        self.run_check(f"cat > {quoted} && chmod {mode:o} {quoted}", stdin=data)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _abort(transport: paramiko.Transport, aborted: threading.Event) -> None:
    """Cut a connection whose call is stuck: wake every paramiko wait on it with an error.

    Runs on the timer's thread. Shutting the socket down first also ends a ``send`` blocked
    on a full socket buffer (a guest frozen under QEMU's ``stop`` reads nothing).
    """
    aborted.set()
    log.warning("SSH call past its deadline; closing the connection to the guest")
    with contextlib.suppress(OSError):
        transport.sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        transport.close()
