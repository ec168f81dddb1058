"""Monotonic deadlines that nested waits share, instead of scattered sleeps.

A :class:`Deadline` is created once at the top of an operation ("boot within 60 s") and
passed down; each nested wait asks it how much time is left, so the budget is shared and
the whole operation is bounded no matter how many steps it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from testbed.errors import DeadlineExceeded

T = TypeVar("T")


class Deadline:
    """A point in monotonic time by which something must be done."""

    def __init__(self, seconds: float, what: str = "operation") -> None:
        self.seconds = seconds
        self.what = what
        self._start = time.monotonic()
        self._end = self._start + seconds

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def cap(self, seconds: float) -> float:
        """The smaller of ``seconds`` and the time left: a timeout for one nested step."""
        return min(seconds, self.remaining())

    def check(self, doing: str | None = None) -> None:
        """Raise :class:`DeadlineExceeded` if the time is up."""
        if self.expired():
            raise DeadlineExceeded(
                f"{self.what} did not finish within {self.seconds:g} s"
                + (f" (while {doing})" if doing else "")
            )

    def sub(self, seconds: float, what: str) -> Deadline:
        """A nested deadline that ends no later than this one."""
        return Deadline(self.cap(seconds), what)


def wait_for(
    predicate: Callable[[], T | None],
    deadline: Deadline,
    *,
    doing: str,
    interval: float = 0.05,
    max_interval: float = 0.5,
) -> T:
    """Poll ``predicate`` until it returns something other than None/False, within ``deadline``.

    The poll interval grows geometrically from ``interval`` to ``max_interval`` so short waits
    stay responsive and long ones stay cheap.
    """
    step = interval
    while True:
        result = predicate()
        if result is not None and result is not False:
            return result
        deadline.check(doing)
        time.sleep(deadline.cap(step))
        step = min(step * 1.5, max_interval)
