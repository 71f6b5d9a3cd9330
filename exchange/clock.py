"""Virtual time. The engine never reads the wall clock: it reads an injected clock."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Anything with a current time in integer milliseconds."""

    @property
    def now(self) -> int: ...


class VirtualClock:
    """A clock that moves only when told: tests and replays run hours in milliseconds."""

    __slots__ = ("now",)

    def __init__(self, start_ms: int = 0) -> None:
        self.now = start_ms

    def advance_to(self, ts: int) -> None:
        if ts < self.now:
            raise ValueError(f"time cannot go back: {ts} < {self.now}")
        self.now = ts

    def advance_by(self, ms: int) -> None:
        self.advance_to(self.now + ms)
