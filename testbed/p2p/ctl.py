"""Run ``p2pctl`` in the guest and parse what it prints: one JSON object per command.

::

    run = p2pctl(vm.ssh, "create size=64K", "mmap", "reg", "dma-write off=0x1000 pattern=0x5a")
    run.op("create")["offset"]          # the object's offset in BAR2
    run.expect_ok()                     # every command went as expected, or AssertionError

For a host action in the middle of a sequence (an unplug), :func:`hold` starts ``p2pctl`` in
the background with a ``hold`` command and returns once it is holding; ``release()`` lets it
go on and returns everything it printed.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from testbed.deadline import Deadline, wait_for
from testbed.errors import GuestError
from testbed.guest.ssh import GuestShell
from testbed.p2p.payload import P2PCTL


@dataclass(frozen=True)
class Step:
    """One command's result line."""

    op: str
    ok: bool
    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def error(self) -> str | None:
        """``"ENODEV"``, ``"EPERM"``, ... or a signal name, if the command failed."""
        value = self.fields.get("error") or self.fields.get("signal")
        return str(value) if value is not None else None

    @property
    def t_ns(self) -> int:
        return int(self.fields["t_ns"])


@dataclass(frozen=True)
class Run:
    """Everything one ``p2pctl`` process printed."""

    command: str
    exitcode: int | None
    steps: tuple[Step, ...]
    stderr: str = ""

    def all(self, op: str) -> list[Step]:
        return [s for s in self.steps if s.op == op]

    def op(self, op: str, index: int = 0) -> Step:
        """The ``index``-th result of command ``op`` (0: the first)."""
        found = self.all(op)
        if len(found) <= index:
            raise AssertionError(
                f"p2pctl printed {len(found)} {op!r} result(s), wanted #{index + 1}\n{self}"
            )
        return found[index]

    def expect_ok(self) -> Run:
        """Assert every command went as expected (p2pctl's exit status 0)."""
        if self.exitcode != 0:
            raise AssertionError(f"p2pctl did not go as expected (exit {self.exitcode})\n{self}")
        return self

    def __str__(self) -> str:
        lines = [f"$ {self.command}"]
        lines += [json.dumps({"op": s.op, "ok": s.ok, **s.fields}) for s in self.steps]
        if self.stderr.strip():
            lines.append("stderr: " + self.stderr.strip())
        return "\n".join(lines)


def parse(text: str, command: str = "p2pctl", exitcode: int | None = None) -> Run:
    """Parse p2pctl's output; a line that is not a JSON object is an error (never skipped)."""
    steps = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GuestError(
                f"p2pctl printed a line that is not JSON (line {n}): {line!r}"
            ) from exc
        if not isinstance(obj, dict) or "op" not in obj:
            raise GuestError(f"p2pctl printed an unexpected object (line {n}): {line!r}")
        # progress lines ({"op":"hold","state":"holding"}) carry no "ok": they are not results
        op, ok = obj.pop("op"), obj.pop("ok", True)
        steps.append(Step(str(op), bool(ok), obj))
    return Run(command, exitcode, tuple(steps))


def _argv(
    commands: tuple[str, ...],
    exporter: str | None,
    importer: str | None,
    importers: tuple[str, ...] = (),
) -> str:
    argv = [P2PCTL]
    if exporter:
        argv += ["-x", exporter]
    if importer:
        argv += ["-i", importer]
    for spec in importers:
        argv += ["-i", spec]
    words = " ".join(commands).split()
    return shlex.join(argv + words)


def p2pctl(
    shell: GuestShell,
    *commands: str,
    exporter: str | None = None,
    importer: str | None = None,
    importers: tuple[str, ...] = (),
    timeout: float = 60,
) -> Run:
    """Run one ``p2pctl`` process with ``commands`` and return its results.

    ``importers``: ``NAME=/dev/p2p-importerN`` each, for commands that say ``imp=NAME``; the
    first is the default (``importer``, a bare path, is the old single-importer form).
    """
    command = _argv(commands, exporter, importer, importers)
    result = shell.run(command, timeout=timeout)
    run = parse(result.stdout, command, result.exitcode)
    return Run(run.command, run.exitcode, run.steps, result.stderr)


@dataclass
class Held:
    """A ``p2pctl`` process in the guest, paused at its ``hold`` command."""

    shell: GuestShell
    name: str
    command: str
    holding: Run = field(init=False)

    @property
    def _out(self) -> str:
        return f"/tmp/p2pctl-{self.name}.jsonl"

    @property
    def _go(self) -> str:
        return f"/tmp/p2pctl-{self.name}.go"

    @property
    def _rc(self) -> str:
        return f"/tmp/p2pctl-{self.name}.rc"

    def _read(self) -> Run:
        return parse(self.shell.run_check(f"cat {self._out}").stdout, self.command)

    def start(self, deadline: Deadline) -> Held:
        self.shell.run_check(
            f"rm -f {self._out} {self._go} {self._rc}; : > {self._out}; "
            f"( {self.command} > {self._out} 2>&1 < /dev/null; "
            f"echo $? > {self._rc}.tmp && mv {self._rc}.tmp {self._rc} ) "
            "> /dev/null 2>&1 < /dev/null &"
        )

        def holding() -> Run | None:
            run = self._read()
            if any(s.op == "hold" and s.get("state") == "holding" for s in run.steps):
                return run
            if self.shell.run(f"test -e {self._rc}").ok:
                raise AssertionError(f"p2pctl ended before it reached 'hold'\n{run}")
            return None

        self.holding = wait_for(holding, deadline, doing=f"p2pctl {self.name} to hold")
        return self

    def release(self, deadline: Deadline) -> Run:
        """Let the held process go on, wait for it to exit, return all it printed."""
        self.shell.run_check(f"touch {self._go}")
        wait_for(
            lambda: self.shell.run(f"test -e {self._rc}").ok,
            deadline,
            doing=f"p2pctl {self.name} to finish",
        )
        code = int(self.shell.run_check(f"cat {self._rc}").stdout.strip() or "-1")
        run = self._read()
        return Run(self.command, code, run.steps)


def hold(
    shell: GuestShell,
    *commands: str,
    name: str = "held",
    exporter: str | None = None,
    importer: str | None = None,
    timeout: float = 60,
) -> Held:
    """Start ``p2pctl`` in the background; ``commands`` must include a bare ``hold``, which
    this fills in with the release file. Returns once the process is holding."""
    if not any(c.strip() == "hold" for c in commands):
        raise ValueError("hold() needs a bare 'hold' among the commands (it adds file=)")
    held = Held(shell, name, "")
    words = [f"hold file={held._go}" if c.strip() == "hold" else c for c in commands]
    held.command = _argv(tuple(words), exporter, importer)
    return held.start(Deadline(timeout, f"starting p2pctl {name}"))


def guest_clock_offset(shell: GuestShell) -> tuple[float, float]:
    """(guest realtime - host realtime, uncertainty), both in seconds, from one ``mark``.

    The guest's clock comes from the RTC at boot (1 s resolution), so guest timestamps are
    only comparable with the host's after this correction; the uncertainty is half the SSH
    round trip.
    """
    t0 = time.time()
    run = p2pctl(shell, "mark name=clock")
    t1 = time.time()
    guest = run.op("mark").t_ns / 1e9
    return guest - (t0 + t1) / 2, (t1 - t0) / 2
