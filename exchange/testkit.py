"""What a test needs to drive an engine's virtual time: advance by, advance to, or to the next scheduled event.

    clock = EngineClock(engine)
    clock.advance_by(30_000)              # 30 s of virtual time: mark ticks, premium samples on the way
    ts, events = clock.advance_to_next("funding")   # straight to the next funding settlement
    ts, events = clock.advance_to_next()            # to whatever is scheduled next

Every move goes through `AdvanceClock` commands, so the events are exactly
what a journal of the same run holds; eight hours of funding take
milliseconds of wall time.
"""

from __future__ import annotations

from typing import Literal

from exchange.commands import AdvanceClock
from exchange.engine import Engine
from exchange.events import Event
from exchange.funding import PREMIUM_SAMPLE_MS
from exchange.mark_price import BASIS_SAMPLE_MS

Scheduled = Literal["mark", "premium", "funding", "adl"]


class EngineClock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def now(self) -> int:
        return self.engine.clock.now

    def advance_to(self, ts: int) -> list[Event]:
        return self.engine.apply(AdvanceClock(ts=ts))

    def advance_by(self, ms: int) -> list[Event]:
        return self.advance_to(self.now + ms)

    def next_scheduled(self, kind: Scheduled | None = None) -> int | None:
        """The virtual time of the next scheduled event (of `kind`, or of any kind); None if none is."""
        now = self.now
        times: list[int] = []
        live = [m.data for m in self.engine.markets.values() if m.data is not None and m.data.live]
        if live and kind in (None, "mark"):
            times.append(now - now % BASIS_SAMPLE_MS + BASIS_SAMPLE_MS)
        if live and kind in (None, "premium"):
            times.append(now - now % PREMIUM_SAMPLE_MS + PREMIUM_SAMPLE_MS)
        if kind in (None, "funding"):
            times += [d.schedule.next_funding_time(now) for d in live]
        risk = self.engine.risk
        if kind in (None, "adl") and risk is not None and getattr(risk, "adl_interval_ms", 0):
            times.append(max(risk.next_adl_publish, now + 1))  # type: ignore[attr-defined]
        return min(times) if times else None

    def advance_to_next(self, kind: Scheduled | None = None) -> tuple[int, list[Event]]:
        """Advance to the next scheduled event (of `kind`); returns its time and the events on the way."""
        ts = self.next_scheduled(kind)
        if ts is None:
            raise LookupError(f"nothing {kind or ''} is scheduled: no symbol has an index yet".replace("  ", " "))
        return ts, self.advance_to(ts)
