"""One symbol's index price, mark price and funding, advanced by index updates and clock ticks.

Wiring (mechanics.md Part 1 "Index price", "Mark price", "Funding"):
- an `UpdateIndex` command gives the sources' prices → `index_price()`;
- `AdvanceClock` walks every boundary of virtual time it passes, in order:
  every 5 s a premium sample (from the book's depth and the index), at each
  funding time the settlement (the sample at T comes first), every 1 s a basis
  sample and a new mark = median(Price1, Price2, last price).
The model is live once the symbol has an index; until then `SetMarkPrice`
sets the mark directly (as tests of the margin rules do).
"""

from __future__ import annotations

from exchange.brackets import BracketTable
from exchange.funding import (
    DEFAULT_FUNDING_PARAMS,
    PREMIUM_SAMPLE_MS,
    FundingParams,
    FundingRateModel,
    FundingSchedule,
)
from exchange.index_price import IndexSource, index_price_detail
from exchange.instrument import Instrument
from exchange.mark_price import BASIS_SAMPLE_MS, DEFAULT_BASIS_WINDOW_MS, MarkPriceModel

#: Impact margin: 200 USDT (IMN = 200 USDT / IMR at max leverage = 200 × max leverage).
IMPACT_MARGIN_USDT = 200


class MarketData:
    __slots__ = ("funding", "index_price", "mark_model", "schedule", "sources")

    def __init__(self, instrument: Instrument, table: BracketTable, schedule: FundingSchedule | None = None,
                 params: FundingParams = DEFAULT_FUNDING_PARAMS, basis_window_ms: int = DEFAULT_BASIS_WINDOW_MS
                 ) -> None:
        self.schedule = schedule if schedule is not None else FundingSchedule()
        impact = instrument.money_atoms(IMPACT_MARGIN_USDT) * table.max_leverage
        self.funding = FundingRateModel(self.schedule, impact, instrument.atoms_per_tick_lot, params)
        self.mark_model = MarkPriceModel(self.schedule.interval_ms, basis_window_ms)
        self.sources: dict[str, IndexSource] = {}
        self.index_price = 0

    def update_sources(self, sources: list[IndexSource]) -> bool:
        """New prices from the index's sources (a missing price: the source is down); True if the index moved."""
        for s in sources:
            self.sources[s.venue] = s
        detail = index_price_detail(sorted(self.sources.values()))
        new = detail.price_ticks if detail is not None else 0
        moved = new != self.index_price
        self.index_price = new
        return moved

    @property
    def live(self) -> bool:
        return self.index_price > 0


PREMIUM, FUNDING, MARK = 0, 1, 2


def boundaries(prev: int, now: int, schedule: FundingSchedule) -> list[tuple[int, int]]:
    """Every (time, kind) in (prev, now]: PREMIUM every 5 s, FUNDING at funding times, MARK every 1 s.

    Sorted by time, then kind: the 5 s premium sample at T is taken before a
    settlement at T, and the mark at T is computed after it.
    """
    out: list[tuple[int, int]] = [(t, FUNDING) for t in schedule.due(prev, now)]
    t = prev - prev % BASIS_SAMPLE_MS + BASIS_SAMPLE_MS
    while t <= now:
        if t % PREMIUM_SAMPLE_MS == 0:
            out.append((t, PREMIUM))
        out.append((t, MARK))
        t += BASIS_SAMPLE_MS
    out.sort()
    return out
