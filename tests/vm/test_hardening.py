"""Failures end fast and the guest is fenced in: real QEMU, real SSH (issue 7, sections 2-3).

- an SSH call into a guest that stops answering ends at its deadline, not never;
- a panic before the pvpanic driver is loaded ends the boot within seconds;
- the guest cannot reach a service listening on the host's 127.0.0.1;
- what the guest wrote (run folder, BAR backing files) is readable by us only.
"""

from __future__ import annotations

import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import DeadlineExceeded, GuestError, GuestPanic, GuestUnreachable
from testbed.guest.console import Problem
from testbed.kernel.image import Kernel
from testbed.p2p.payload import payload
from testbed.qemu.machine import Machine

Factory = Callable[..., Machine]
SLACK = 3.0  #: what "ends at its timeout" may overrun by on a shared 2-core TCG host


# --- SSH calls are bounded even when paramiko would wait forever ------------------------------


def test_ssh_run_ends_at_its_deadline_when_the_guest_freezes_before_exec(
    vm: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest is frozen (QMP ``stop``) right after the channel opened, so the exec
    request is never answered: paramiko's ``exec_command`` waits with no timeout."""
    client = vm.ssh._client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    real_open = transport.open_session

    def open_then_freeze(*args: Any, **kwargs: Any) -> Any:
        channel = real_open(*args, **kwargs)
        vm.qmp.execute("stop")
        return channel

    monkeypatch.setattr(transport, "open_session", open_then_freeze)
    timeout = 4.0
    start = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded, match="stopped answering over SSH"):
            vm.ssh.run("true", timeout=timeout)
        elapsed = time.monotonic() - start
    finally:
        vm.qmp.execute("cont")
    assert elapsed < timeout + SLACK, f"took {elapsed:.1f} s with timeout={timeout:g}"
    # the stuck connection was closed: the next call says so at once instead of hanging
    with pytest.raises(GuestUnreachable, match="not connected"):
        vm.ssh.run("true", timeout=timeout)


def test_ssh_run_ends_at_its_deadline_when_stdin_cannot_be_sent(vm: Machine) -> None:
    """A command that never reads its stdin: once the SSH window is full, paramiko's
    ``sendall`` waits as long as the channel's timeout (none by default)."""
    timeout = 4.0
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"within 4 s"):
        vm.ssh.run("sleep 600", timeout=timeout, stdin=b"x" * (8 << 20))
    elapsed = time.monotonic() - start
    assert elapsed < timeout + SLACK, f"took {elapsed:.1f} s with timeout={timeout:g}"


# --- a panic early in boot -------------------------------------------------------------------


@pytest.mark.console_allows(Problem.PANIC)
def test_a_panic_early_in_boot_ends_the_boot_within_seconds(machine_factory: Factory) -> None:
    """No init in the initramfs and no root device: the kernel panics long before the
    pvpanic driver (a module) is loaded; the boot must fail with the panic, not time out."""
    boot_timeout = 150.0
    start = time.monotonic()
    with pytest.raises(GuestPanic, match="before the pvpanic driver was loaded") as info:
        machine_factory("default", kernel_args=["rdinit=/nonexistent"], boot_timeout=boot_timeout)
    elapsed = time.monotonic() - start
    assert elapsed < 45, f"the panic took {elapsed:.0f} s to end a {boot_timeout:g} s boot"
    assert "Kernel panic - not syncing" in str(info.value), "the error carries the excerpt"


# --- the guest's network reaches nothing but the SSH forward ----------------------------------


@pytest.fixture
def host_service() -> Iterator[tuple[int, list[str]]]:
    """A TCP service on the host's 127.0.0.1 that greets whoever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            seen.append(peer[0])
            with conn:
                conn.sendall(b"host-secret\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_the_guest_cannot_reach_a_service_on_the_hosts_loopback(
    vm: Machine, host_service: tuple[int, list[str]]
) -> None:
    port, seen = host_service
    # the host as user-mode networking shows it to the guest, and the host's own address
    for address in ("10.0.2.2", "127.0.0.1"):
        result = vm.ssh.run(f"nc -w 3 {address} {port} </dev/null", timeout=30)
        assert "host-secret" not in result.stdout, f"the guest reached the host via {address}"
    assert not seen, f"the host service saw connections from {seen}"
    # the guest has no default route either
    routes = vm.ssh.run_check("cat /proc/net/route").stdout.splitlines()[1:]
    assert not [r for r in routes if r.split()[1] == "00000000"], routes
    # ... and SSH, the one way in, still works (this very call)
    assert vm.ssh.run_check("echo in").stdout.strip() == "in"


# --- what the guest wrote is ours only --------------------------------------------------------


def test_run_folder_is_0700_and_bar_files_0600(vm: Machine) -> None:
    assert stat.S_IMODE(vm.run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(vm.run_dir.parent.stat().st_mode) == 0o700, "the test's folder"
    backing = vm.backing_file("gpu-exporter")
    assert backing.stat().st_size == 64 << 20, "QEMU sized the file we created"
    assert stat.S_IMODE(backing.stat().st_mode) == 0o600


# --- a driver that fails to probe fails the boot ---------------------------------------------


def test_a_driver_probe_failure_fails_the_boot(
    machine_factory: Factory, testbed_kernel: Kernel, tmp_path: Path
) -> None:
    """A 2G BAR on a CPU with 32 physical address bits: nothing above 4 GiB, so the guest
    cannot assign the BAR, the exporter's probe fails (-ENODEV, which the driver core does
    not print) and the machine must not be reported up. (The schema keeps real machines
    within q35's 64-bit window, so the address space is shrunk instead of the BAR grown.)"""
    machine = tmp_path / "big-bar.yaml"
    machine.write_text(
        "name: big-bar\nhotplug: acpi\ndevices:\n"
        "  - id: gpu-exporter\n    type: gpu-exporter\n    bar-size: 2G\n"
        "  - id: importer\n    type: importer\n"
    )
    with pytest.raises(GuestError, match="failed to probe its device at boot") as info:
        machine_factory(
            machine,
            qemu_args=["-cpu", "max,phys-bits=32"],
            **payload(testbed_kernel).machine_kwargs(),
        )
    assert re.search(r"\[1af4:1110\] has driver none, expected p2p_exporter", str(info.value))
