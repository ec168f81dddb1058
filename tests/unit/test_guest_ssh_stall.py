"""SSHShell.run against an SSH server that accepts and then stalls (a fake sshd: paramiko's
own server side, on a loopback socket, no guest).

paramiko's client waits without a bound for the reply to an exec request and, with no channel
timeout, for window space in ``sendall``; a guest that stops answering at those points used
to hang ``run`` forever whatever its ``timeout``. Now the call ends at its deadline (plus
:data:`testbed.guest.ssh.ABORT_GRACE`) with :class:`DeadlineExceeded`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.common import AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from testbed.deadline import Deadline
from testbed.errors import DeadlineExceeded, GuestUnreachable
from testbed.guest import keys
from testbed.guest.ssh import ABORT_GRACE, SSHShell

SLACK = 2.0


class _Stalling(paramiko.ServerInterface):
    """Lets the client in and opens its channel; then answers the exec request late (never,
    within the test) or accepts it and never reads the command's stdin."""

    def __init__(self, answer_exec: bool, release: threading.Event) -> None:
        self.answer_exec = answer_exec
        self.release = release

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if not self.answer_exec:
            self.release.wait(60)  # the server's transport thread stalls here
        return self.answer_exec


@pytest.fixture(params=[False, True], ids=["exec-never-answered", "stdin-never-read"])
def stalling_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SSHShell]:
    host = keys.client_key(tmp_path)  # any ed25519 key in OpenSSH format will do
    host_key = paramiko.Ed25519Key.from_private_key_file(str(host.private))
    (tmp_path / "client").mkdir()
    client = keys.client_key(tmp_path / "client")
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        conn, _ = listener.accept()
        transport = paramiko.Transport(conn)
        transports.append(transport)
        transport.add_server_key(host_key)
        transport.start_server(server=_Stalling(bool(request.param), release))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    shell = SSHShell(listener.getsockname()[1], client.private, host.public)
    shell.connect(Deadline(10, "connect to the fake sshd"))
    try:
        yield shell
    finally:
        release.set()
        shell.close()
        for transport in transports:
            transport.close()
        listener.close()
        thread.join(5)


def test_run_ends_at_its_deadline_when_the_server_stalls(stalling_server: SSHShell) -> None:
    timeout = 1.5
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"within 1\.5 s"):
        stalling_server.run("sleep 600", timeout=timeout, stdin=b"x" * (16 << 20))
    elapsed = time.monotonic() - start
    assert elapsed < timeout + ABORT_GRACE + SLACK, f"took {elapsed:.1f} s"
    with pytest.raises(GuestUnreachable):
        stalling_server.run("true", timeout=timeout)
