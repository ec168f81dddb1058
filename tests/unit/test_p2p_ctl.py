"""p2pctl's JSON lines and the guest-side plumbing around it (testbed.p2p.ctl).

The sample transcript ``tests/data/p2p/p2pctl-unplug.jsonl`` has the shapes p2pctl prints
(see the header comment of ``qemu-devices/p2p/p2pctl/p2pctl.c``): result lines with ``ok``,
a ``hold`` progress line without it, failures with ``errno``/``error``/``msg`` or ``signal``,
and one blank line. :class:`FakeGuest` stands in for SSH: it keeps the guest's ``/tmp`` files
in a dict and plays a background p2pctl started by :class:`~testbed.p2p.ctl.Held`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.deadline import Deadline
from testbed.errors import GuestError
from testbed.guest.ssh import COMMAND_TIMEOUT, CommandResult, GuestShell
from testbed.p2p import ctl
from testbed.p2p.ctl import Held, Run, Step, guest_clock_offset, hold, p2pctl, parse
from testbed.p2p.payload import P2PCTL

DATA = Path(__file__).resolve().parent.parent / "data" / "p2p"
TRANSCRIPT = (DATA / "p2pctl-unplug.jsonl").read_text()

CREATE = (
    '{"op":"create","ok":true,"handle":1,"size":65536,"offset":"0x0","bus":"0xf8000000",'
    '"mmap_offset":"0x100000000","t_ns":1795654644633054238}'
)
MARK_T_NS = 1_795_654_644_633_054_238


def result(command: str, exitcode: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(command, exitcode, stdout, stderr, 0.01)


# ---- parse -----------------------------------------------------------------------------------


def test_parse_result_line_keeps_every_field_but_op_and_ok() -> None:
    run = parse(CREATE)
    (step,) = run.steps
    assert step.op == "create"
    assert step.ok is True
    assert step.fields == {
        "handle": 1,
        "size": 65536,
        "offset": "0x0",
        "bus": "0xf8000000",
        "mmap_offset": "0x100000000",
        "t_ns": 1795654644633054238,
    }
    assert step["offset"] == "0x0"
    assert step.get("mmap_offset") == "0x100000000"
    assert step.get("missing", "dflt") == "dflt"
    assert step.t_ns == 1795654644633054238
    assert step.error is None


def test_parse_transcript_skips_blank_lines_and_keeps_order() -> None:
    run = parse(TRANSCRIPT, "p2pctl ...", 1)
    assert [s.op for s in run.steps] == [
        "create",
        "mmap",
        "reg",
        "hold",
        "hold",
        "dma-write",
        "touch",
        "dma-write",
    ]
    assert run.command == "p2pctl ..."
    assert run.exitcode == 1
    assert run.stderr == ""
    # time stamps are guest CLOCK_REALTIME, increasing along the transcript
    stamps = [s.t_ns for s in run.steps]
    assert stamps == sorted(stamps)


def test_progress_line_without_ok_counts_as_ok() -> None:
    line = '{"op":"hold","state":"holding","file":"/tmp/a1","pid":108,"t_ns":1795654644633511020}'
    (step,) = parse(line).steps
    assert step.op == "hold"
    assert step.ok is True
    assert step["state"] == "holding"
    assert step["pid"] == 108
    assert "ok" not in step.fields
    assert "op" not in step.fields


def test_errno_failure_line() -> None:
    line = (
        '{"op":"dma-write","ok":false,"errno":19,"error":"ENODEV",'
        '"msg":"importer device is gone","t_ns":1795654646774102938}'
    )
    (step,) = parse(line).steps
    assert step.ok is False
    assert step.error == "ENODEV"
    assert step["errno"] == 19
    assert step["msg"] == "importer device is gone"


def test_signal_failure_line() -> None:
    line = '{"op":"touch","ok":false,"signal":"SIGBUS","off":"0x0","t_ns":1795654646774230017}'
    (step,) = parse(line).steps
    assert step.ok is False
    assert step.error == "SIGBUS"


def test_error_is_none_for_a_step_without_error_or_signal() -> None:
    assert Step("mark", True, {"name": "x", "t_ns": 1}).error is None
    assert Step("x", False, {"error": "EPERM", "signal": "SIGSEGV"}).error == "EPERM"


@pytest.mark.parametrize(
    "line",
    [
        "p2pctl: unknown option -- z",
        "usage: p2pctl [-e] [-x EXPORTER_DEV] ...",
        '{"op":"create","ok":true',  # cut short
    ],
)
def test_non_json_line_is_a_guest_error_naming_the_line(line: str) -> None:
    text = CREATE + "\n\n" + line + "\n"
    with pytest.raises(GuestError) as info:
        parse(text)
    assert "line 3" in str(info.value)
    assert repr(line) in str(info.value)


@pytest.mark.parametrize("line", ['["create"]', '"create"', "42", '{"ok":true,"t_ns":1}'])
def test_json_that_is_not_an_op_object_is_a_guest_error(line: str) -> None:
    with pytest.raises(GuestError, match="unexpected object"):
        parse(line)


def test_empty_output_gives_no_steps() -> None:
    assert parse("").steps == ()
    assert parse("\n  \n\t\n").steps == ()


# ---- Run -------------------------------------------------------------------------------------


def test_run_op_and_all() -> None:
    run = parse(TRANSCRIPT)
    assert run.op("create")["handle"] == 1
    writes = run.all("dma-write")
    assert len(writes) == 2
    assert run.op("dma-write", 1) is writes[1]
    assert run.op("dma-write", 1)["expected"] is True
    assert run.all("destroy") == []


def test_run_op_missing_is_an_assertion_error_with_the_transcript() -> None:
    run = parse(CREATE, "p2pctl create size=64K")
    with pytest.raises(AssertionError) as info:
        run.op("create", 1)
    text = str(info.value)
    assert "printed 1 'create' result(s), wanted #2" in text
    assert "$ p2pctl create size=64K" in text
    with pytest.raises(AssertionError, match="printed 0 'mmap'"):
        run.op("mmap")


@pytest.mark.parametrize(("exitcode", "ok"), [(0, True), (1, False), (2, False), (None, False)])
def test_expect_ok_follows_the_exit_status(exitcode: int | None, ok: bool) -> None:
    run = parse(TRANSCRIPT, "p2pctl", exitcode)
    if ok:
        assert run.expect_ok() is run
    else:
        with pytest.raises(AssertionError, match=rf"exit {exitcode}\)"):
            run.expect_ok()


def test_str_shows_command_lines_and_stderr() -> None:
    run = Run(
        "p2pctl mark",
        1,
        (Step("mark", True, {"name": "a", "t_ns": 5}), Step("touch", False, {"signal": "SIGBUS"})),
        stderr="  oops\n",
    )
    lines = str(run).splitlines()
    assert lines[0] == "$ p2pctl mark"
    assert json.loads(lines[1]) == {"op": "mark", "ok": True, "name": "a", "t_ns": 5}
    assert json.loads(lines[2]) == {"op": "touch", "ok": False, "signal": "SIGBUS"}
    assert lines[3] == "stderr: oops"
    assert len(lines) == 4


def test_str_leaves_out_blank_stderr() -> None:
    run = Run("p2pctl", 0, (), stderr=" \n")
    assert str(run) == "$ p2pctl"


def test_str_round_trips_through_parse() -> None:
    run = parse(TRANSCRIPT, "cmd", 0)
    body = str(run).split("\n", 1)[1]
    again = parse(body, "cmd", 0)
    assert again.steps == run.steps


# ---- command line ----------------------------------------------------------------------------


def test_argv_splits_commands_into_words() -> None:
    assert ctl._argv(("create size=64K", "mmap", "reg"), None, None) == (
        f"{P2PCTL} create size=64K mmap reg"
    )


def test_argv_devices_come_first() -> None:
    line = ctl._argv(("mark",), "/dev/p2p-exporter0", "/dev/p2p-importer1")
    assert shlex.split(line) == [
        P2PCTL,
        "-x",
        "/dev/p2p-exporter0",
        "-i",
        "/dev/p2p-importer1",
        "mark",
    ]


def test_argv_quotes_shell_metacharacters() -> None:
    line = ctl._argv(("create size=64K; mmap", "mark name=$HOME"), "/dev/p2p exporter", None)
    assert line == (f"{P2PCTL} -x '/dev/p2p exporter' create 'size=64K;' mmap mark 'name=$HOME'")
    assert shlex.split(line)[3:] == ["create", "size=64K;", "mmap", "mark", "name=$HOME"]


class RecordingShell(GuestShell):
    """Answers every command with one canned result and records what it was asked."""

    def __init__(self, stdout: str, exitcode: int = 0, stderr: str = "") -> None:
        self.stdout = stdout
        self.exitcode = exitcode
        self.stderr = stderr
        self.commands: list[str] = []
        self.timeouts: list[float] = []

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        self.commands.append(command)
        self.timeouts.append(timeout)
        return result(command, self.exitcode, self.stdout, self.stderr)


def test_p2pctl_runs_one_command_and_keeps_exit_status_and_stderr() -> None:
    shell = RecordingShell(TRANSCRIPT, exitcode=1, stderr="warning: x\n")
    run = p2pctl(shell, "create size=64K", "mmap", exporter="/dev/p2p-exporter0", timeout=7)
    assert shell.commands == [f"{P2PCTL} -x /dev/p2p-exporter0 create size=64K mmap"]
    assert shell.timeouts == [7]
    assert run.command == shell.commands[0]
    assert run.exitcode == 1
    assert run.stderr == "warning: x\n"
    assert run.op("touch").error == "SIGBUS"


# ---- hold / Held -----------------------------------------------------------------------------

_START = re.compile(
    r"^rm -f (?P<out>\S+) (?P<go>\S+) (?P<rc>\S+); : > (?P=out); "
    r"\( (?P<cmd>.+) > (?P=out) 2>&1 < /dev/null; "
    r"echo \$\? > (?P=rc)\.tmp && mv (?P=rc)\.tmp (?P=rc) \) "
    r"> /dev/null 2>&1 < /dev/null &$"
)


class FakeGuest(GuestShell):
    """The guest's files, and one background p2pctl that ``Held.start`` launches.

    The process prints ``before`` at once, its ``holding`` line after ``polls_to_hold`` reads
    of its output, then waits for the go file; ``after`` and the exit status follow once the
    go file exists and one more ``test -e`` of the rc file has been answered. With
    ``exit_before_hold`` it exits (status 1) without ever holding.
    """

    def __init__(
        self,
        *,
        before: tuple[str, ...] = (CREATE,),
        after: tuple[str, ...] = (),
        exitcode: int = 0,
        polls_to_hold: int = 0,
        exit_before_hold: bool = False,
        out_appears_after: int = 0,
        rc_empty_reads: int = 0,
    ) -> None:
        self.files: dict[str, str] = {"/tmp/p2pctl-held.jsonl": "stale\n"}
        self.commands: list[str] = []
        self.before = before
        self.after = after
        self.exitcode = exitcode
        self.polls_to_hold = polls_to_hold
        self.exit_before_hold = exit_before_hold
        self.out_appears_after = out_appears_after
        self.rc_empty_reads = rc_empty_reads
        self.started: re.Match[str] | None = None
        self.holding = False
        self.released = False
        self.finished = False
        self.reads = 0

    # the background process ------------------------------------------------------------------

    def _write(self, line: str) -> None:
        assert self.started is not None
        self.files[self.started["out"]] += line + "\n"

    def _advance_on_read(self) -> None:
        assert self.started is not None
        self.reads += 1
        if self.started["out"] not in self.files and self.reads > self.out_appears_after:
            self.files[self.started["out"]] = ""
            for line in self.before:
                self._write(line)
            if self.exit_before_hold:
                self.files[self.started["rc"]] = "1\n"
                self.finished = True
        if (
            not self.holding
            and not self.finished
            and self.started["out"] in self.files
            and self.reads > self.polls_to_hold + self.out_appears_after
        ):
            argv = shlex.split(self.started["cmd"])
            go = next(w.split("=", 1)[1] for w in argv if w.startswith("file="))
            self._write(
                json.dumps({"op": "hold", "state": "holding", "file": go, "pid": 108, "t_ns": 1})
            )
            self.holding = True

    def _finish(self) -> None:
        assert self.started is not None
        self._write('{"op":"hold","state":"released","reason":"file","ok":true,"t_ns":2}')
        for line in self.after:
            self._write(line)
        self.finished = True
        # ``echo $? > rc``: the file exists (empty) before echo writes into it
        self.files[self.started["rc"]] = "" if self.rc_empty_reads else f"{self.exitcode}\n"

    def _rc_still_empty(self, path: str) -> bool:
        """Whether this read of the rc file sees it before ``echo`` wrote into it."""
        if self.started is None or path != self.started["rc"] or not self.rc_empty_reads:
            return False
        if not self.finished:
            return False
        self.rc_empty_reads -= 1
        if not self.rc_empty_reads:
            self.files[path] = f"{self.exitcode}\n"
        return True

    # the shell ---------------------------------------------------------------------------------

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        self.commands.append(command)
        start = _START.match(command)
        if start:
            assert self.started is None, "started twice"
            for name in ("out", "go", "rc"):
                self.files.pop(start[name], None)
            self.started = start
            return result(command)
        verb, _, path = command.partition(" ")
        if verb == "cat":
            if self.started is not None and path == self.started["out"]:
                self._advance_on_read()
            if self._rc_still_empty(path):
                return result(command, 0, "")
            if path not in self.files:
                return result(command, 1, "", f"cat: can't open '{path}': No such file\n")
            return result(command, 0, self.files[path])
        if verb == "test" and path.startswith("-s "):
            path = path[3:]
            if self._rc_still_empty(path):
                return result(command, 1)
            return result(command, 0 if self.files.get(path) else 1)
        if verb == "test" and path.startswith("-e "):
            path = path[3:]
            if (
                self.started is not None
                and path == self.started["rc"]
                and self.released
                and not self.finished
            ):
                self._finish()
                return result(command, 1)
            return result(command, 0 if path in self.files else 1)
        if verb == "touch":
            self.files[path] = ""
            if self.started is not None and path == self.started["go"] and self.holding:
                self.released = True
            return result(command)
        raise AssertionError(f"unexpected guest command: {command}")


class NoGuest(GuestShell):
    """A shell that must not be used."""

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        raise AssertionError(f"no guest command expected, got {command!r}")


DMA_GONE = (
    '{"op":"dma-write","ok":false,"errno":19,"error":"ENODEV","msg":"gone","expected":true,'
    '"t_ns":3}'
)


def test_hold_fills_in_the_go_file_and_waits_until_holding() -> None:
    guest = FakeGuest(polls_to_hold=1)
    held = hold(guest, "create size=64K", "hold", "dma-write off=0", exporter="/dev/p2p-x0")
    assert guest.started is not None
    assert guest.started["out"] == "/tmp/p2pctl-held.jsonl"
    assert guest.started["go"] == "/tmp/p2pctl-held.go"
    assert guest.started["rc"] == "/tmp/p2pctl-held.rc"
    assert shlex.split(guest.started["cmd"]) == [
        P2PCTL,
        "-x",
        "/dev/p2p-x0",
        "create",
        "size=64K",
        "hold",
        "file=/tmp/p2pctl-held.go",
        "dma-write",
        "off=0",
    ]
    assert held.command == guest.started["cmd"]
    # the stale output of an earlier run was removed, not parsed
    assert [s.op for s in held.holding.steps] == ["create", "hold"]
    assert held.holding.op("hold")["file"] == "/tmp/p2pctl-held.go"
    assert held.holding.exitcode is None
    assert guest.reads == 2  # one poll before the holding line showed up
    assert not guest.released


def test_hold_name_sets_the_file_names() -> None:
    guest = FakeGuest()
    guest.files.clear()
    held = hold(guest, "hold", name="a1")
    assert guest.started is not None
    assert guest.started["out"] == "/tmp/p2pctl-a1.jsonl"
    assert guest.started["go"] == "/tmp/p2pctl-a1.go"
    assert held.holding.op("hold")["file"] == "/tmp/p2pctl-a1.go"


def test_release_touches_the_go_file_and_returns_everything() -> None:
    guest = FakeGuest(after=(DMA_GONE,), exitcode=0)
    held = hold(guest, "create size=64K", "hold", "dma-write off=0 expect=ENODEV")
    run = held.release(Deadline(5, "release"))
    assert guest.released
    assert "touch /tmp/p2pctl-held.go" in guest.commands
    assert run.command == held.command
    assert run.exitcode == 0
    assert [s.op for s in run.steps] == ["create", "hold", "hold", "dma-write"]
    assert run.op("hold", 1)["state"] == "released"
    assert run.op("dma-write").error == "ENODEV"
    assert run.expect_ok() is run


def test_release_reports_a_non_zero_exit_status() -> None:
    guest = FakeGuest(after=(DMA_GONE,), exitcode=1)
    run = hold(guest, "hold", "dma-write").release(Deadline(5, "release"))
    assert run.exitcode == 1
    with pytest.raises(AssertionError, match="exit 1"):
        run.expect_ok()


def test_hold_notices_a_process_that_ended_before_holding() -> None:
    failed = '{"op":"create","ok":false,"errno":28,"error":"ENOSPC","msg":"no room","t_ns":1}'
    guest = FakeGuest(before=(failed,), exit_before_hold=True)
    with pytest.raises(AssertionError, match="ended before it reached 'hold'") as info:
        hold(guest, "-e", "create size=1G", "hold")
    assert "ENOSPC" in str(info.value)


def test_hold_gives_up_at_its_timeout() -> None:
    guest = FakeGuest(polls_to_hold=10_000)
    with pytest.raises(TimeoutError, match="p2pctl held to hold"):
        hold(guest, "hold", timeout=0.2)


@pytest.mark.parametrize("commands", [("create", "mmap"), ("create", "mmap; hold"), ()])
def test_hold_needs_a_bare_hold(commands: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="bare 'hold'"):
        hold(NoGuest(), *commands)


def test_hold_accepts_a_padded_bare_hold() -> None:
    guest = FakeGuest()
    held = hold(guest, "create", "  hold ")
    assert "hold file=/tmp/p2pctl-held.go" in held.command


def test_hold_with_arguments_but_no_bare_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="bare 'hold'"):
        hold(NoGuest(), "create", "hold timeout=5", timeout=0.2)


# The output file is created before p2pctl starts and the exit status is renamed into place,
# so a reader never sees a missing output file or an empty status: _START pins that shape.


def test_held_start_can_be_called_directly() -> None:
    guest = FakeGuest()
    command = shlex.join([P2PCTL, "hold", "file=/tmp/p2pctl-x.go"])
    held = Held(guest, "x", command).start(Deadline(2, "start"))
    assert held.holding.op("hold")["file"] == "/tmp/p2pctl-x.go"
    assert held._out == "/tmp/p2pctl-x.jsonl"
    assert held._rc == "/tmp/p2pctl-x.rc"


# ---- clock offset ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, *values: float) -> None:
        self._values: Iterator[float] = iter(values)

    def time(self) -> float:
        return next(self._values)


def test_guest_clock_offset_uses_the_midpoint_of_the_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark = json.dumps({"op": "mark", "ok": True, "name": "clock", "t_ns": MARK_T_NS})
    shell = RecordingShell(mark + "\n")
    host_before = MARK_T_NS / 1e9 - 30.5  # the guest's RTC is 30 s ahead of the host
    monkeypatch.setattr(ctl, "time", FakeClock(host_before, host_before + 1.0))
    offset, uncertainty = guest_clock_offset(shell)
    assert shell.commands == [f"{P2PCTL} mark name=clock"]
    assert offset == pytest.approx(30.0, abs=1e-5)
    assert uncertainty == pytest.approx(0.5, abs=1e-6)


def test_guest_clock_offset_negative_when_guest_is_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark = json.dumps({"op": "mark", "ok": True, "name": "clock", "t_ns": MARK_T_NS})
    host = MARK_T_NS / 1e9 + 2.0
    monkeypatch.setattr(ctl, "time", FakeClock(host, host + 0.002))
    offset, uncertainty = guest_clock_offset(RecordingShell(mark))
    assert offset == pytest.approx(-2.001, abs=1e-5)
    assert uncertainty == pytest.approx(0.001, abs=1e-6)


def test_guest_clock_offset_needs_a_mark_line() -> None:
    with pytest.raises(AssertionError, match="'mark'"):
        guest_clock_offset(RecordingShell(CREATE))
