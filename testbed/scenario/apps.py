"""``p2pctl`` processes a scenario runs in the background of the guest, by name.

Unlike :func:`testbed.p2p.ctl.hold`, an app need not stop at a ``hold`` (a DMA stream runs
straight through while the host unplugs), can be killed by pid, and can be watched while it
runs (:meth:`AppProcess.results` reads what it printed so far). Its output, exit status and
pid go to ``/tmp/scn-<name>.*`` in the guest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from testbed.deadline import Deadline, wait_for
from testbed.errors import GuestError
from testbed.guest.ssh import GuestShell
from testbed.p2p import ctl
from testbed.p2p.payload import P2PCTL
from testbed.scenario.model import App


@dataclass(frozen=True)
class CommandResult:
    """One command of an app and the line p2pctl printed for it."""

    command: str
    result: ctl.Step

    @property
    def args(self) -> dict[str, str]:
        words = self.command.split()
        return dict(w.split("=", 1) for w in words[1:] if "=" in w)


def pair(commands: tuple[str, ...], run: ctl.Run) -> list[CommandResult]:
    """Match p2pctl's result lines to the commands that printed them (a ``hold`` prints a
    progress line first, which is not a result). A killed process has fewer results."""
    results = [s for s in run.steps if s.get("state") != "holding"]
    return [CommandResult(c, r) for c, r in zip(commands, results, strict=False)]


class AppProcess:
    """One background p2pctl in the guest."""

    def __init__(self, shell: GuestShell, app: App, importers: tuple[str, ...] = ()) -> None:
        self.shell = shell
        self.app = app
        stem = f"/tmp/scn-{app.name}"
        self.err = f"{stem}.err"
        self.out, self.rc, self.pidfile, self.go_file = (
            f"{stem}.jsonl",
            f"{stem}.rc",
            f"{stem}.pid",
            f"{stem}.go",
        )
        # -k: a step that fails (a DMA refused after an unplug, say) is a result the scenario
        # judges, not the end of the app; stderr (p2pctl names such steps there) stays apart
        # from the JSON lines.
        argv = [P2PCTL, "-k"]
        if app.exporter:
            argv += ["-x", app.exporter]
        if app.importer:
            argv += ["-i", app.importer]
        for spec in importers:  # NAME=PATH, for imp=NAME (the runner resolves them)
            argv += ["-i", spec]
        words: list[str] = []
        for command in app.commands:
            words += [f"hold file={self.go_file}"] if command == "hold" else command.split()
        self.command = shlex.join(argv + words)
        self.final: ctl.Run | None = None

    def start(self, deadline: Deadline) -> None:
        files = f"{self.out} {self.err} {self.rc} {self.pidfile} {self.go_file}"
        self.shell.run_check(
            f"rm -f {files}; : > {self.out}; "
            f"( {self.command} > {self.out} 2> {self.err} < /dev/null & echo $! > {self.pidfile}; "
            f"wait $!; echo $? > {self.rc}.tmp && mv {self.rc}.tmp {self.rc} ) "
            "> /dev/null 2>&1 < /dev/null &"
        )
        if self.app.hold:

            def holding() -> bool:
                run = self.results()
                if any(s.op == "hold" and s.get("state") == "holding" for s in run.steps):
                    return True
                if self.exited():
                    raise GuestError(f"app {self.app.name!r} ended before it reached 'hold'\n{run}")
                return False

            wait_for(holding, deadline, doing=f"app {self.app.name} to hold")

    def results(self) -> ctl.Run:
        """What the app printed so far."""
        text = self.shell.run_check(f"cat {self.out}").stdout
        return ctl.parse(text, self.command)

    def count(self, op: str) -> int:
        return sum(1 for s in self.results().steps if s.op == op and s.get("state") != "holding")

    def exited(self) -> bool:
        return self.shell.run(f"test -e {self.rc}").ok

    def go(self) -> None:
        self.shell.run_check(f"touch {self.go_file}")

    def kill(self, signal: str) -> None:
        self.shell.run_check(f"kill -{signal} $(cat {self.pidfile})")

    def finish(self, deadline: Deadline) -> ctl.Run:
        """Wait for the app to exit; everything it printed, with its exit status."""
        if self.final is not None:
            return self.final
        wait_for(self.exited, deadline, doing=f"app {self.app.name} to exit")
        code = int(self.shell.run_check(f"cat {self.rc}").stdout.strip() or "-1")
        run = self.results()
        self.final = ctl.Run(self.command, code, run.steps)
        return self.final

    def paired(self) -> list[CommandResult]:
        run = self.final if self.final is not None else self.results()
        return pair(self.app.commands, run)

    def object_handle(self) -> int | None:
        """Handle of the app's first object, from its ``create`` result."""
        for cr in self.paired():
            if cr.result.op == "create" and cr.result.ok and "handle" in cr.result.fields:
                return int(cr.result["handle"])
        return None

    def object_offset(self) -> int | None:
        """BAR2 offset of the app's first object, from its ``create`` result."""
        for cr in self.paired():
            if cr.result.op == "create" and cr.result.ok and "offset" in cr.result.fields:
                return int(str(cr.result["offset"]), 16)
        return None
