"""Mark price: Binance's median of three, per symbol.

mechanics.md Part 1 "Mark price" and Part 2 §1.2 [BIN-MARK]:
    MarkPrice = median(Price1, Price2, ContractPrice)
    Price1    = PriceIndex × (1 + LastFundingRate × TimeUntilNextFunding / FundingInterval)
    Price2    = PriceIndex + MovingAverage(Basis),  Basis_i = (Bid1_i + Ask1_i) / 2 − PriceIndex_i
    ContractPrice = the last traded price
The basis average runs over a configurable window, default 30 s of 1 s samples
(Binance since 2025-09-18).

Exact arithmetic: prices in ticks, the funding rate in `exchange.funding.RATE_DEN`
units, times in ms. A basis sample is kept in half ticks (Bid1 + Ask1 − 2 × Index),
so a mid between two ticks is exact; Price1, Price2 and the median are exact
fractions, rounded once, to the nearest tick with ties to even (half-even).

Missing inputs, explicitly:
    - a basis sample taken while either side of the book is empty has no mid:
      it is recorded as missing and left out of the average (the average is
      over the samples that have a mid);
    - no sample with a mid in the window: the moving average is 0, Price2 = index;
    - no last price (None, or 0 as `Market.last_price` holds before the first
      trade): Price2 stands in for it, so the mark is
      median(Price1, Price2, Price2) = Price2.
    - no index: the caller keeps the previous index (see `exchange.index_price`).

Window: the average at time t is over the samples with t − window < ts ≤ t
(30 samples at a 1 s cadence). Samples must come in time order; a second
sample at the same ts replaces the first.

Intended integration: every second of virtual time (the market-data clock tick
on `AdvanceClock`), for each symbol, after the index of that second:
`model.sample_basis(now, index, book.best_bid(), book.best_ask())`, then
`model.mark_at(now, index, market.last_price or None, funding_model.last_rate,
schedule.next_funding_time(now))`; the engine sets `Market.mark_price` to it and
publishes `MarkPriceUpdated` (what `SetMarkPrice` does by hand today), then
re-checks margin and liquidations at the new mark.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import NamedTuple

from exchange.funding import BASE_INTERVAL_MS, RATE_DEN

#: Binance's basis window since 2025-09-18: 30 s (of 1 s samples).
DEFAULT_BASIS_WINDOW_MS = 30_000
#: The basis sampling period the window assumes.
BASIS_SAMPLE_MS = 1_000


class BasisSample(NamedTuple):
    ts: int
    basis_half_ticks: int | None  # Bid1 + Ask1 − 2 × Index = 2 × (mid − index); None: no mid


class MarkComponents(NamedTuple):
    """The three candidates (exact, ticks), the median, and the mark on the tick grid."""

    price1: Fraction
    price2: Fraction
    contract_price: Fraction  # the last price, or Price2 when there is none
    exact: Fraction
    mark_ticks: int


def median3(a: Fraction, b: Fraction, c: Fraction) -> Fraction:
    """The middle one of three ("if Price1 < Price2 < ContractPrice, take Price2")."""
    return sorted((a, b, c))[1]


def price1(index_ticks: int, last_funding_rate: int, time_to_next_ms: int, funding_interval_ms: int) -> Fraction:
    """Price1 = Index × (1 + LastFundingRate × TimeUntilNextFunding / FundingInterval), exact, in ticks."""
    if funding_interval_ms <= 0:
        raise ValueError("funding interval must be positive")
    if time_to_next_ms < 0:
        raise ValueError(f"time to the next funding is negative ({time_to_next_ms} ms)")
    den = RATE_DEN * funding_interval_ms
    return Fraction(index_ticks * (den + last_funding_rate * time_to_next_ms), den)


class MarkPriceModel:
    """One symbol's basis samples and the mark price computed from them."""

    __slots__ = ("basis_window_ms", "funding_interval_ms", "samples")

    def __init__(
        self, funding_interval_ms: int = BASE_INTERVAL_MS, basis_window_ms: int = DEFAULT_BASIS_WINDOW_MS,
    ) -> None:
        if funding_interval_ms <= 0 or basis_window_ms <= 0:
            raise ValueError("funding interval and basis window must be positive")
        self.funding_interval_ms = funding_interval_ms
        self.basis_window_ms = basis_window_ms
        self.samples: deque[BasisSample] = deque()

    def sample_basis(self, ts: int, index_ticks: int, best_bid: int | None, best_ask: int | None) -> None:
        """Record Basis = (Bid1 + Ask1) / 2 − Index at `ts` (missing when either side is empty)."""
        samples = self.samples
        if samples and ts < samples[-1].ts:
            raise ValueError(f"basis sample at {ts} is older than the last one ({samples[-1].ts})")
        if samples and ts == samples[-1].ts:
            samples.pop()
        basis = None if best_bid is None or best_ask is None else best_bid + best_ask - 2 * index_ticks
        samples.append(BasisSample(ts, basis))
        horizon = ts - self.basis_window_ms
        while samples[0].ts <= horizon:
            samples.popleft()

    def basis_average(self, ts: int) -> Fraction | None:
        """MovingAverage(Basis) at `ts` over (ts − window, ts], exact in ticks; None if no sample there has a mid.

        Ask at a `ts` no earlier than the newest sample: samples older than the
        newest one's window have been dropped.
        """
        horizon = ts - self.basis_window_ms
        values = [s.basis_half_ticks for s in self.samples
                  if horizon < s.ts <= ts and s.basis_half_ticks is not None]
        if not values:
            return None
        return Fraction(sum(values), 2 * len(values))  # half ticks → ticks

    def price2(self, ts: int, index_ticks: int) -> Fraction:
        """Price2 = Index + MovingAverage(Basis); the average is 0 when the window has no mid."""
        ma = self.basis_average(ts)
        return Fraction(index_ticks) + (ma if ma is not None else 0)

    def components(
        self, ts: int, index_ticks: int, last_price_ticks: int | None, last_funding_rate: int, next_funding_ts: int,
    ) -> MarkComponents:
        """Price1, Price2, the contract price and their median at `ts`; the mark rounded half-even to a tick."""
        if index_ticks <= 0:
            raise ValueError(f"index must be positive, got {index_ticks}")
        p1 = price1(index_ticks, last_funding_rate, next_funding_ts - ts, self.funding_interval_ms)
        p2 = self.price2(ts, index_ticks)
        last = Fraction(last_price_ticks) if last_price_ticks else p2
        exact = median3(p1, p2, last)
        # Fraction.__round__ without ndigits: nearest integer, ties to even, exact
        return MarkComponents(p1, p2, last, exact, round(exact))

    def mark_at(
        self, ts: int, index_ticks: int, last_price_ticks: int | None, last_funding_rate: int, next_funding_ts: int,
    ) -> int:
        """The mark price at `ts` in ticks (nearest tick, half-even)."""
        return self.components(ts, index_ticks, last_price_ticks, last_funding_rate, next_funding_ts).mark_ticks
