"""The output channel of ``testbed exec``: frames the guest's ``execout`` writes to a serial
port, parsed on the host with every field bounded.

``testbed exec`` without ``--keep`` does not need SSH: the command goes into the guest inside
the per-run initramfs overlay (the host already writes that archive), the guest's start-up
runs it with ``execout`` (``testbed/guest/tools/execout.c``), and its stdout, stderr and exit
status come back over a second serial port that QEMU writes to a file in the run folder and
the host only reads. The guest (an untrusted kernel) gets no path to the host through it: it
is a byte stream this module parses, like the console log, and a malformed stream is an error
naming what was wrong, never a crash or an unbounded buffer.

The stream (see ``execout.c``)::

    anything (at most MAX_PREAMBLE bytes), then MAGIC
    frames: TYPE (1 byte) LENGTH (2 bytes, big endian) PAYLOAD (LENGTH bytes)
      'S'  the command started             LENGTH 0
      'O'  stdout bytes                    LENGTH 1..MAX_PAYLOAD
      'E'  stderr bytes                    LENGTH 1..MAX_PAYLOAD
      'X'  the command ended, last frame   LENGTH 2: b"e" + exit code, or b"s" + signal
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.errors import GuestError

MAGIC = b"TBEXEC1\n"
MAX_PAYLOAD = 4096
#: bytes tolerated before the magic (nothing is expected there; a bound, not a buffer)
MAX_PREAMBLE = 64 * 1024
#: guest path of the command file and of the output port
COMMAND_FILE = "/etc/testbed/exec"
PORT = "/dev/ttyS1"
#: the exit status ``testbed exec`` returns for a command killed by a signal (as ssh does)
NO_STATUS = 255


class ExecStreamError(GuestError):
    """The guest's exec output stream is malformed (names the offset and what was found)."""


@dataclass(frozen=True)
class Started:
    """The guest is about to run the command (the boot is over)."""


@dataclass(frozen=True)
class Output:
    """Bytes the command wrote; ``stream`` is ``"stdout"`` or ``"stderr"``."""

    stream: str
    data: bytes


@dataclass(frozen=True)
class Exited:
    """The command ended: with ``code``, or killed by ``signal`` (then ``code`` is None)."""

    code: int | None
    signal: int | None

    @property
    def status(self) -> int:
        """What ``testbed exec`` exits with: the command's code, NO_STATUS after a signal."""
        return self.code if self.code is not None else NO_STATUS


Event = Started | Output | Exited

_STREAMS = {ord("O"): "stdout", ord("E"): "stderr"}


class ExecStreamParser:
    """Incremental parser: :meth:`feed` bytes as they arrive, get the complete events.

    Holds at most one frame (3 + MAX_PAYLOAD bytes) or MAX_PREAMBLE + len(MAGIC) bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._synced = False
        self._offset = 0  #: stream offset of ``_buf[0]`` (for error messages)
        self.exited: Exited | None = None
        self.started = False

    def feed(self, data: bytes) -> list[Event]:
        if self.exited is not None:
            return []  # the command is over; what follows (the power-off) does not matter
        self._buf += data
        events: list[Event] = []
        if not self._synced:
            at = self._buf.find(MAGIC)
            if at < 0:
                if len(self._buf) > MAX_PREAMBLE + len(MAGIC):
                    raise ExecStreamError(
                        f"no {MAGIC!r} in the first {len(self._buf)} bytes of the exec "
                        "output port: the guest's execout did not start (see the console)"
                    )
                return events
            self._consume(at + len(MAGIC))
            self._synced = True
        while len(self._buf) >= 3 and self.exited is None:
            kind, length = self._buf[0], int.from_bytes(self._buf[1:3], "big")
            self._check(kind, length)
            if len(self._buf) < 3 + length:
                break
            payload = bytes(self._buf[3 : 3 + length])
            self._consume(3 + length)
            events.append(self._event(kind, payload))
        return events

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _check(self, kind: int, length: int) -> None:
        where = f"exec output frame at byte {self._offset}"
        if kind == ord("S"):
            if length != 0:
                raise ExecStreamError(f"{where}: start frame with {length} payload bytes")
            if self.started:
                raise ExecStreamError(f"{where}: a second start frame")
        elif kind in _STREAMS:
            if not 1 <= length <= MAX_PAYLOAD:
                raise ExecStreamError(f"{where}: output frame of {length} bytes (1..{MAX_PAYLOAD})")
            if not self.started:
                raise ExecStreamError(f"{where}: output before the start frame")
        elif kind == ord("X"):
            if length != 2:
                raise ExecStreamError(f"{where}: exit frame of {length} bytes (expected 2)")
            if not self.started:
                raise ExecStreamError(f"{where}: exit before the start frame")
        else:
            raise ExecStreamError(f"{where}: unknown frame type {bytes([kind])!r}")

    def _event(self, kind: int, payload: bytes) -> Event:
        if kind == ord("S"):
            self.started = True
            return Started()
        if kind in _STREAMS:
            return Output(_STREAMS[kind], payload)
        how, value = payload[0], payload[1]
        if how == ord("e"):
            self.exited = Exited(code=value, signal=None)
        elif how == ord("s"):
            self.exited = Exited(code=None, signal=value)
        else:
            raise ExecStreamError(
                f"exec output exit frame before byte {self._offset}: unknown kind "
                f"{bytes([how])!r} (expected b'e' or b's')"
            )
        return self.exited
