"""One error tree for the whole testbed.

Every error the testbed raises on purpose derives from :class:`TestbedError`, so a caller
can catch "anything the testbed knows how to explain" in one place. Errors from libraries
(paramiko, qemu.qmp, subprocess, yaml) are translated at the boundary with ``raise ... from``
so the original traceback is kept::

    TestbedError
     +-- ConfigError              a YAML file or option is wrong (names file, line, key)
     |    +-- UnknownNameError    a name is not in a registry (lists the known names)
     +-- DependencyError          a host tool or package is missing (names the fix)
     +-- KernelError              the kernel under test cannot be obtained or built
 |    +-- ModuleBuildError    a guest module does not compile (file:line, compiler output)
     +-- ImageError               the guest initramfs cannot be built
     +-- CacheError               the cache folder cannot be written (names folder and fix)
     +-- QEMUError
     |    +-- LaunchError         QEMU did not start (argv, exit code, log tail)
     |    +-- QMPError            a QMP command failed (command, arguments, reply)
     |    +-- MachineDied         QEMU exited while we still needed it
     |    +-- AccelError          a forced accelerator does not work
     +-- HotplugError
     |    +-- UnplugTimeout       the guest never acknowledged a device_del
     +-- GuestError
     |    +-- GuestUnreachable    SSH never answered
     |    +-- GuestCommandError   a command in the guest failed (exit code, stdout, stderr)
     |    +-- GuestPanic          the guest kernel panicked (console excerpt)
     |    +-- GuestUnhealthy      the console shows an Oops, WARNING, KASAN report, ...
     +-- DeadlineExceeded         a bounded wait ran out (also a TimeoutError)

``KeyboardInterrupt`` and ``asyncio.CancelledError`` are never caught and turned into one of
these: code cleans up and re-raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class TestbedError(Exception):
    """Root of every error the testbed raises on purpose."""

    __test__ = False  # not a pytest test class, despite the name


class ConfigError(TestbedError):
    """A configuration file or option is wrong; the message names where and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.key = key
        where = ""
        if self.path is not None:
            where = str(self.path)
            if line is not None:
                where += f":{line}"
            where += ": "
        if key is not None:
            where += f"{key}: "
        super().__init__(where + message)


class UnknownNameError(ConfigError):
    """A name (device, topology, scenario) is not in its registry."""

    def __init__(
        self,
        kind: str,
        name: str,
        known: Sequence[str],
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(sorted(known))
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(
            f"unknown {kind} {name!r}; known: {listing}", path=path, line=line, key=key
        )


class DependencyError(TestbedError):
    """A host program, package or file the testbed needs is missing."""


class KernelError(TestbedError):
    """The kernel under test cannot be found, fetched, unpacked or built."""


class ModuleBuildError(KernelError):
    """Building guest kernel modules failed; carries the compiler's output and the first error."""

    def __init__(self, message: str, *, output: str, location: str | None) -> None:
        self.output = output
        self.location = location  #: ``path:line`` of the first error, if one was recognised
        super().__init__(message)


class ImageError(TestbedError):
    """The guest initramfs cannot be assembled."""


class CacheError(TestbedError):
    """The cache folder is read-only, full or missing; the message names it and the fix."""


class QEMUError(TestbedError):
    """Something went wrong with the QEMU process or its monitor."""


class LaunchError(QEMUError):
    """QEMU exited or never became reachable during start-up."""

    def __init__(
        self, message: str, *, argv: Sequence[str], exitcode: int | None, log_tail: str
    ) -> None:
        self.argv = tuple(argv)
        self.exitcode = exitcode
        self.log_tail = log_tail
        text = f"{message}\n  exit code: {exitcode}\n  command line: {' '.join(argv)}"
        if log_tail.strip():
            text += "\n  QEMU said:\n    " + "\n    ".join(log_tail.rstrip().splitlines())
        super().__init__(text)


class QMPError(QEMUError):
    """A QMP command returned an error or could not be sent."""

    def __init__(self, command: str, arguments: object, reply: str) -> None:
        self.command = command
        self.arguments = arguments
        self.reply = reply
        super().__init__(f"QMP {command} {arguments!r} failed: {reply}")


class MachineDied(QEMUError):
    """QEMU exited while the testbed still expected it to run."""


class AccelError(QEMUError):
    """The accelerator the user forced does not work on this host."""


class HotplugError(TestbedError):
    """A hot-plug or hot-unplug did not complete."""


class UnplugTimeout(HotplugError):
    """QEMU sent no DEVICE_DELETED for a device within the bound: the guest never let go."""


class GuestError(TestbedError):
    """The guest misbehaved or could not be reached."""


class GuestUnreachable(GuestError):
    """SSH to the guest never succeeded within the bound."""


class GuestCommandError(GuestError):
    """A command run in the guest exited non-zero; carries both output streams."""

    def __init__(self, command: str, exitcode: int, stdout: str, stderr: str) -> None:
        self.command = command
        self.exitcode = exitcode
        self.stdout = stdout
        self.stderr = stderr
        text = f"guest command failed with exit code {exitcode}: {command}"
        if stdout.strip():
            text += "\n  stdout:\n    " + "\n    ".join(stdout.rstrip().splitlines()[-20:])
        if stderr.strip():
            text += "\n  stderr:\n    " + "\n    ".join(stderr.rstrip().splitlines()[-20:])
        super().__init__(text)


class GuestPanic(GuestError):
    """The guest kernel panicked; the message carries the console excerpt."""


class GuestUnhealthy(GuestError):
    """The serial console shows a kernel problem (Oops, BUG, WARNING, KASAN, stall...)."""


class DeadlineExceeded(TestbedError, TimeoutError):
    """A bounded wait ran out of time."""
