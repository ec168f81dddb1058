"""``testbed exec [OPTIONS] -- CMD [ARG...]``: boot, run one command in the guest, shut down.

The command's stdout and stderr are copied to ours as they arrive (not at the end), and
``testbed exec`` exits with the command's own status, so it fits in a shell pipeline or a
``git bisect run`` script. One argument is passed to the guest's ``sh -c`` as written (so
``testbed exec -- 'dmesg | tail'`` runs a pipeline in the guest); several are quoted and joined.
The guest's stdin is empty. ``--keep`` leaves the guest up afterwards, with the SSH command
and QMP socket printed, until Ctrl-C. The testbed's own failures (a guest that does not boot,
a lost connection, a kernel panic, a command that outlives --timeout) end with "testbed:
error: ..." and exit status 2.

Without ``--keep`` the guest needs no SSH: the command travels in the guest's initramfs, the
guest runs it as soon as its drivers are loaded, and its output and exit status come back
over a second serial port that the host only reads (testbed.guest.execout); the guest then
powers off. ``--ssh`` runs it over SSH instead, as ``--keep`` does (slower: network, sshd
and the SSH handshake come first).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from testbed.cli.common import add_boot_options, add_kernel_options, kernel_from, machine_kwargs
from testbed.errors import ConfigError

#: Exit status when the command died of a signal (sshd reports no status), as ssh.
NO_STATUS = 255
#: Environment variable: a file ``testbed exec`` writes its phase time stamps to (JSON,
#: ``time.monotonic()`` seconds), for ``testbed bench``'s breakdown.
TIMINGS_ENV = "TESTBED_EXEC_TIMINGS"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "exec",
        help="boot a machine, run a command in the guest, exit with its status",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--machine", default="default", help="machine name or YAML path")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave the guest up after the command, print ssh and QMP, stop on Ctrl-C",
    )
    p.add_argument(
        "--ssh",
        action="store_true",
        help="run the command over SSH (as --keep does) instead of the exec serial port",
    )
    p.add_argument(
        "--no-p2p",
        action="store_true",
        help="do not load the P2P exporter/importer modules and p2pctl",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="keep console, QMP log and dmesg here (default: a temp folder, removed at the end)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds the command may run (default: %(default)g)",
    )
    add_kernel_options(p)
    add_boot_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    p.set_defaults(func=main)


def guest_command(words: list[str]) -> str:
    """What ``sh -c`` runs in the guest: one word as written, several quoted and joined."""
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise ConfigError("no command given; usage: testbed exec [OPTIONS] -- CMD [ARG...]")
    return words[0] if len(words) == 1 else shlex.join(words)


def _copy_to(stream: Any) -> Any:
    closed = False

    def write(chunk: bytes) -> None:
        nonlocal closed
        if closed:
            return
        try:
            stream.write(chunk)
            stream.flush()
        except BrokenPipeError:  # ``testbed exec ... | head``: the rest is not wanted
            closed = True

    return write


def main(args: argparse.Namespace) -> int:
    stamps = {"main": time.monotonic()}
    try:
        return _main(args, stamps)
    finally:
        target = os.environ.get(TIMINGS_ENV)
        if target:
            stamps["main_end"] = time.monotonic()
            Path(target).write_text(json.dumps(stamps))


def _main(args: argparse.Namespace, stamps: dict[str, float]) -> int:
    command = guest_command(args.command)
    from testbed.cli.boot import hold, term_as_interrupt
    from testbed.devices.registry import load_machine
    from testbed.qemu.machine import Machine

    term_as_interrupt()
    definition = load_machine(args.machine)  # the cheap checks first: a typo fails at once
    kernel = kernel_from(args)
    kwargs = machine_kwargs(args, kernel)
    from testbed.qemu.process import reaped_tempdir

    # registered with the reaper: a SIGKILL during the boot leaves no folder behind either
    over_ssh = args.keep or args.ssh
    with reaped_tempdir("p2p-testbed-exec-") as tmp:
        run_dir = args.run_dir or tmp
        vm = Machine(
            definition,
            kernel,
            run_dir,
            collect_dmesg=over_ssh and args.run_dir is not None,
            exec_command=None if over_ssh else command,
            **kwargs,
        )
        try:
            with vm:
                if over_ssh:
                    code = vm.ssh.stream(
                        command,
                        _copy_to(sys.stdout.buffer),
                        _copy_to(sys.stderr.buffer),
                        timeout=args.timeout,
                    )
                    code = NO_STATUS if code < 0 else code
                else:
                    out, err = _copy_to(sys.stdout.buffer), _copy_to(sys.stderr.buffer)
                    ended = vm.run_exec(
                        lambda o: out(o.data) if o.stream == "stdout" else err(o.data),
                        timeout=args.timeout,
                    )
                    code = ended.status
                if args.keep:
                    print(f"testbed: the command exited with {code}", file=sys.stderr, flush=True)
                    hold(vm, definition, kernel)
        finally:
            stamps["vm_down"] = time.monotonic()
            if os.environ.get(TIMINGS_ENV):
                from testbed.guest.console import marker_times

                stamps.update({f"vm_{k}": v for k, v in vm.timings.items()})
                marks = marker_times(vm.console_text())
                stamps.update({f"guest_{k}": v for k, v in marks.items()})
    return code
