"""The exec output stream (testbed.guest.execout): frames parsed with every field bounded."""

from __future__ import annotations

import pytest

from testbed.guest import execout
from testbed.guest.execout import (
    MAGIC,
    MAX_PAYLOAD,
    MAX_PREAMBLE,
    ExecStreamError,
    ExecStreamParser,
    Exited,
    Output,
    Started,
)


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(2, "big") + payload


STREAM = (
    MAGIC
    + frame(b"S")
    + frame(b"O", b"hello\n")
    + frame(b"E", b"oops\n")
    + frame(b"O", b"\x00\xff\r\n")  # binary, no newline translation
    + frame(b"X", b"e\x07")
)
EVENTS = [
    Started(),
    Output("stdout", b"hello\n"),
    Output("stderr", b"oops\n"),
    Output("stdout", b"\x00\xff\r\n"),
    Exited(code=7, signal=None),
]


def test_a_whole_stream_gives_start_output_in_order_and_the_exit_status() -> None:
    parser = ExecStreamParser()
    assert parser.feed(STREAM) == EVENTS
    assert parser.exited == Exited(code=7, signal=None)
    assert parser.exited.status == 7


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8])
def test_the_stream_may_arrive_cut_anywhere(chunk: int) -> None:
    parser = ExecStreamParser()
    events = []
    for i in range(0, len(STREAM), chunk):
        events += parser.feed(STREAM[i : i + chunk])
    assert events == EVENTS


def test_bytes_before_the_magic_are_skipped_and_after_the_exit_ignored() -> None:
    parser = ExecStreamParser()
    assert parser.feed(b"\r\nnoise" + MAGIC[:3]) == []
    assert parser.feed(MAGIC[3:] + frame(b"S") + frame(b"X", b"e\x00")) == [
        Started(),
        Exited(code=0, signal=None),
    ]
    assert parser.feed(b"whatever the power-off leaves") == []


def test_a_command_killed_by_a_signal_exits_255_as_over_ssh() -> None:
    parser = ExecStreamParser()
    (_, ended) = parser.feed(MAGIC + frame(b"S") + frame(b"X", b"s\x09"))
    assert ended == Exited(code=None, signal=9)
    assert isinstance(ended, Exited) and ended.status == execout.NO_STATUS == 255


def test_a_largest_frame_passes_and_a_larger_one_is_refused_from_its_header() -> None:
    parser = ExecStreamParser()
    big = b"x" * MAX_PAYLOAD
    assert parser.feed(MAGIC + frame(b"S") + frame(b"O", big)) == [Started(), Output("stdout", big)]
    # refused as soon as the 3-byte header is in, before any payload is buffered
    with pytest.raises(ExecStreamError, match=r"output frame of 4097 bytes \(1..4096\)"):
        parser.feed(b"O" + (MAX_PAYLOAD + 1).to_bytes(2, "big"))


def test_no_magic_within_the_preamble_bound_is_an_error() -> None:
    parser = ExecStreamParser()
    assert parser.feed(b"\0" * MAX_PREAMBLE) == []
    with pytest.raises(ExecStreamError, match="did not start"):
        parser.feed(b"\0" * (len(MAGIC) + 1))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (frame(b"Q", b"x"), r"byte 8: unknown frame type b'Q'"),
        (frame(b"O", b"early"), "output before the start frame"),
        (frame(b"X", b"e\x00"), "exit before the start frame"),
        (frame(b"S", b"x"), "start frame with 1 payload bytes"),
        (frame(b"S") + frame(b"S"), r"byte 11: a second start frame"),
        (frame(b"S") + frame(b"O"), "output frame of 0 bytes"),
        (frame(b"S") + frame(b"X", b"e"), "exit frame of 1 bytes"),
        (frame(b"S") + frame(b"X", b"q\x01"), "unknown kind b'q'"),
    ],
)
def test_malformed_frames_are_errors_naming_the_offset_or_field(
    frames: bytes, message: str
) -> None:
    with pytest.raises(ExecStreamError, match=message):
        ExecStreamParser().feed(MAGIC + frames)
