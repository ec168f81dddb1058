"""``testbed boot``: bring a machine up and keep it up for a developer, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from testbed.cli.common import add_boot_options, add_kernel_options, kernel_from, machine_kwargs
from testbed.devices.registry import load_machine, machine_names

if TYPE_CHECKING:
    from testbed.devices.registry import Machine as MachineDef
    from testbed.kernel.image import Kernel
    from testbed.qemu.machine import Machine


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "boot",
        help="boot a machine and keep it up until Ctrl-C",
        description="Boot a machine, print how to reach it (ssh, QMP socket, console log) and "
        "keep it running until Ctrl-C or until the guest powers off.",
    )
    p.add_argument(
        "machine",
        nargs="?",
        default="default",
        help=f"machine name or YAML path (known: {', '.join(machine_names())})",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="where console, QMP log and BAR backing files go (default: a new temp folder, "
        "removed at the end)",
    )
    p.add_argument(
        "--no-p2p",
        action="store_true",
        help="do not load the P2P exporter/importer modules and p2pctl",
    )
    add_kernel_options(p)
    add_boot_options(p)
    p.set_defaults(func=main)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def term_as_interrupt() -> None:
    """Make SIGTERM clean up like Ctrl-C (the machine's context manager shuts it down)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def hold(vm: Machine, machine: MachineDef, kernel: Kernel) -> None:
    """Print how to reach the running guest, then wait until Ctrl-C or until QEMU exits."""
    info = vm.info()
    assert vm.accel is not None
    print(
        f"machine {machine.spec.name!r} is up ({vm.accel.accel.value}; kernel "
        f"{kernel.release}; {vm.timings['boot_to_ssh_s']:.1f} s)\n"
        f"  ssh:      {info['ssh']}\n"
        f"  QMP:      {info['qmp_socket']}  (e.g. qmp-shell, socat)\n"
        f"  console:  {info['console_log']}\n"
        f"  run dir:  {info['run_dir']}\n"
        "Ctrl-C stops the machine.",
        flush=True,
    )
    assert vm.process is not None
    while vm.process.wait(1.0) is None:
        vm.check_alive()
    print(f"testbed: QEMU exited (code {vm.process.poll()})", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from testbed.qemu.machine import Machine
    from testbed.qemu.process import reaped_tempdir

    term_as_interrupt()
    machine = load_machine(args.machine)  # the cheap checks first: a typo fails at once
    kernel = kernel_from(args)
    kwargs = machine_kwargs(args, kernel)
    # registered with the reaper: a SIGKILL during the boot leaves no folder behind either
    with reaped_tempdir("p2p-testbed-boot-") as tmp:
        run_dir = args.run_dir or tmp
        with Machine(machine, kernel, run_dir, **kwargs) as vm:
            hold(vm, machine, kernel)
    return 0
