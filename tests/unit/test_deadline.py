"""Shared monotonic deadlines (testbed.deadline); every wait here is well under 0.2 s."""

from __future__ import annotations

import time

import pytest

from testbed.deadline import Deadline, wait_for
from testbed.errors import DeadlineExceeded, TestbedError


def test_fresh_deadline() -> None:
    d = Deadline(10, "boot")
    assert not d.expired()
    assert 9.5 < d.remaining() <= 10
    assert 0 <= d.elapsed < 0.5
    d.check("booting")  # does not raise


def test_zero_deadline_is_expired_at_once() -> None:
    d = Deadline(0, "nothing")
    assert d.expired()
    assert d.remaining() == 0.0


def test_remaining_never_negative_and_expires() -> None:
    d = Deadline(0.02)
    time.sleep(0.04)
    assert d.expired()
    assert d.remaining() == 0.0
    assert d.elapsed >= 0.04


def test_cap() -> None:
    d = Deadline(10)
    assert d.cap(0.5) == 0.5
    assert 9.5 < d.cap(100) <= 10
    assert Deadline(0).cap(5) == 0.0


def test_sub_never_outlives_parent() -> None:
    parent = Deadline(0.05, "outer")
    child = parent.sub(100, "inner")
    assert child.what == "inner"
    assert child.seconds <= 0.05
    assert child.remaining() <= parent.remaining() + 1e-3
    time.sleep(0.06)
    assert parent.expired()
    assert child.expired()


def test_sub_shorter_than_parent() -> None:
    parent = Deadline(10, "outer")
    child = parent.sub(0.01, "inner")
    assert child.seconds == 0.01
    time.sleep(0.02)
    assert child.expired()
    assert not parent.expired()


def test_check_raises_with_what_and_doing() -> None:
    d = Deadline(0, "guest boot")
    with pytest.raises(DeadlineExceeded) as info:
        d.check("waiting for SSH")
    text = str(info.value)
    assert "guest boot did not finish within 0 s" in text
    assert "(while waiting for SSH)" in text


def test_check_without_doing() -> None:
    with pytest.raises(DeadlineExceeded) as info:
        Deadline(0.0, "unplug").check()
    assert str(info.value) == "unplug did not finish within 0 s"


def test_deadline_exceeded_is_a_timeout_and_a_testbed_error() -> None:
    with pytest.raises(TimeoutError):
        Deadline(0).check()
    assert issubclass(DeadlineExceeded, TestbedError)


def test_wait_for_returns_first_truthy_result() -> None:
    results = iter([None, False, None, "ready"])
    calls = []

    def predicate() -> str | bool | None:
        calls.append(1)
        return next(results)

    assert wait_for(predicate, Deadline(1), doing="polling", interval=0.001) == "ready"
    assert len(calls) == 4


@pytest.mark.parametrize("value", [0, "", [], 0.0])
def test_wait_for_accepts_falsy_non_none_results(value: object) -> None:
    assert wait_for(lambda: value, Deadline(1), doing="x") == value


def test_wait_for_succeeds_even_if_deadline_already_past() -> None:
    assert wait_for(lambda: 42, Deadline(0), doing="x") == 42


def test_wait_for_times_out_with_doing_text() -> None:
    calls = []

    def never() -> None:
        calls.append(time.monotonic())

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        wait_for(never, Deadline(0.05, "device removal"), doing="waiting for DEVICE_DELETED")
    took = time.monotonic() - start
    assert "device removal did not finish within 0.05 s" in str(info.value)
    assert "(while waiting for DEVICE_DELETED)" in str(info.value)
    assert 0.05 <= took < 0.2
    assert len(calls) >= 2


def test_wait_for_never_sleeps_past_the_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        wait_for(lambda: None, Deadline(0.03), doing="x", interval=5, max_interval=5)
    assert time.monotonic() - start < 0.2


def test_wait_for_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("testbed.deadline.time.sleep", sleeps.append)
    results = iter([None] * 6 + [True])
    wait_for(lambda: next(results), Deadline(100), doing="x", interval=0.1, max_interval=0.3)
    assert sleeps == pytest.approx([0.1, 0.15, 0.225, 0.3, 0.3, 0.3])
