"""Funding: impact prices, the premium index, the funding rate, its schedule and the payments.

mechanics.md Part 1 "Funding" and Part 2 §1.3 [BIN-FUND]:
    P  = [max(0, ImpactBid − Index) − max(0, Index − ImpactAsk)] / Index     sampled every 5 s
    ImpactBid / ImpactAsk = average fill price of a market order of IMN,  IMN = 200 USDT / IMR at max leverage
    P̄  = Σ k·P_k / Σ k                                                      (linearly weighted, k = 1, 2, …)
    F  = [P̄ + clamp(I − P̄, −0.05%, +0.05%)] / (8/N)                          N = interval in hours, I = 0.01% per 8 h
    F  = clamp(F, floor, cap)                                                per-symbol cap, default ±0.75%
    FundingAmount = MarkPrice × size × F                                     positive F: longs pay shorts

Units. Rates (premium samples, I, the clamp, the cap, F) are integers over
`RATE_DEN` = 10^12 (so 0.01% = 100_000_000). Prices are ticks, money atoms,
`k` = atoms per tick·lot (`Instrument.atoms_per_tick_lot`). Impact prices are
exact `Fraction`s of a tick; P̄ is an exact `Fraction` of rate units.

Rounding, each once and explicit:
    - a premium sample P_k: to the nearest 1e-12, ties to even;
    - the funding rate F: to the nearest 1e-8 (Binance publishes 8 decimals),
      ties to even, computed from the exact P̄; the cap/floor (which must be on
      the 1e-8 grid) is applied after, so a capped rate is exactly the cap;
    - payments: each position's wallet change is floor(−q × mark × k × F / 10^12):
      a payer pays the exact amount rounded up, a receiver gets it rounded down;
      the remainder (≥ 0, fewer atoms than there are positions) goes to the
      exchange's fee income (`FUNDING_REMAINDER_LEDGER`), so payments +
      remainder balance to the atom: nothing is created or lost.

Intended integration (the engine is not wired here):
    - one `FundingSchedule` (every N hours from an epoch; the Unix epoch gives
      Binance's 00:00/08:00/16:00 UTC for 8 h) and one `FundingRateModel` per symbol;
    - on `AdvanceClock(prev → now)`, for each `ts in schedule.sample_times(prev, now)`
      (every 5 s), in time order: the model's `sample(index, bids, asks)` with the
      index of that second and `book.depth(BUY)` / `book.depth(SELL)`;
    - for each `T in schedule.due(prev, now)` (funding times in (prev, now]):
      after the sample at T, `rate = model.settle()`, then
      `funding_payments([p.qty for p in open positions of the symbol], mark at T, rate, k)`,
      each payment booked to its position's wallet (cross wallet or isolated
      margin, `BalanceReason.FUNDING_FEE`), the remainder to `Treasury.fee_income`;
      `model.last_rate` then feeds `MarkPriceModel.mark_at` as the last funding rate.
    - Only positions open AT the settlement time pay or receive: the settlement
      at T runs when the clock reaches T, on the positions as they stand then,
      i.e. after every command applied while the clock read < T and before any
      command applied at T or later. A position closed before T pays nothing at
      T; one opened at T (after the clock reached T) first pays at the next time.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import msgspec

#: Every rate in this module is an integer over this denominator (1e-12 resolution).
RATE_DEN = 10**12
#: The funding rate is rounded to this many rate units: 1e-8, the 8 decimals Binance publishes.
FUNDING_RATE_QUANTUM = 10**4

HOUR_MS = 3_600_000
#: The interval the interest rate I and the premium clamp are quoted for (F is scaled by N / 8 for N hours).
BASE_INTERVAL_MS = 8 * HOUR_MS
#: Premium index sampling period (5,760 samples per 8 h).
PREMIUM_SAMPLE_MS = 5_000
#: The margin of the impact notional: IMN = 200 USDT / IMR at max leverage.
IMPACT_MARGIN = "200"
#: The exchange ledger the payments' remainder is booked to (`Treasury.fee_income`).
FUNDING_REMAINDER_LEDGER = "fee_income"


def rate_units(value: str | int | Decimal) -> int:
    """A decimal rate ("0.0001") as an exact integer over RATE_DEN; error if finer than 1e-12 or a float."""
    if isinstance(value, float):
        raise TypeError(f"give a rate as a decimal string, not a float ({value!r})")
    d = Decimal(value) * RATE_DEN
    if not d.is_finite() or d != d.to_integral_value():
        raise ValueError(f"rate {value} is not a multiple of 1e-12")
    return int(d)


def rate_str(units: int, places: int = 8) -> str:
    """A rate in RATE_DEN units as a decimal string with `places` decimals (exact if on that grid)."""
    return str((Decimal(units) / RATE_DEN).quantize(Decimal(1).scaleb(-places)))


#: I = 0.01% per 8 h; some contracts use 0.
DEFAULT_INTEREST = rate_units("0.0001")
#: The ±0.05% band of clamp(I − P̄, ·, ·).
DEFAULT_PREMIUM_CLAMP = rate_units("0.0005")
#: The per-symbol cap (and, negated, floor) of the funding rate.
DEFAULT_RATE_CAP = rate_units("0.0075")


class FundingParams(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol's funding parameters, in RATE_DEN units. `floor` None: −cap."""

    interest: int = DEFAULT_INTEREST  # per 8 h
    premium_clamp: int = DEFAULT_PREMIUM_CLAMP  # per 8 h
    cap: int = DEFAULT_RATE_CAP  # on the final rate
    floor: int | None = None

    def __post_init__(self) -> None:
        if self.premium_clamp < 0:
            raise ValueError("the premium clamp must be ≥ 0")
        floor = -self.cap if self.floor is None else self.floor
        if floor > self.cap:
            raise ValueError("funding rate floor above its cap")
        if self.cap % FUNDING_RATE_QUANTUM or floor % FUNDING_RATE_QUANTUM:
            raise ValueError("funding rate cap and floor must be multiples of 1e-8")

    @property
    def rate_floor(self) -> int:
        return -self.cap if self.floor is None else self.floor


#: Binance's defaults: I = 0.01% per 8 h, clamp ±0.05%, cap ±0.75%.
DEFAULT_FUNDING_PARAMS = FundingParams()


# ------------------------------------------------------------------ impact prices and premium index
def impact_margin_notional(max_leverage: int, impact_margin_atoms: int) -> int:
    """IMN = impact margin / IMR at max leverage = margin × max leverage (IMR = 1 / max leverage), in atoms.

    Binance's example: BNBUSDT at 20x (IMR 5%) → 200 × 20 = 4,000 USDT.
    """
    if max_leverage <= 0 or impact_margin_atoms <= 0:
        raise ValueError("impact margin and max leverage must be positive")
    return impact_margin_atoms * max_leverage


def impact_price(
    depth: Sequence[tuple[int, int]], notional_atoms: int, atoms_per_tick_lot: int, allow_partial: bool = False,
) -> Fraction | None:
    """Average fill price, in ticks (exact), of a market order for `notional_atoms` walked through `depth`.

    `depth` is one side of the book, best level first: [(price_ticks, qty_lots)]
    (bids for the impact bid, asks for the impact ask; `OrderBook.depth`). The
    order takes `min(level notional, what is left)` of each level in turn, a
    fraction of a lot where it ends inside a level, so
        impact = notional / Σ_levels (notional taken at p / p)       [ticks]
    If the depth holds less than the notional: None, or with `allow_partial`
    the average over the whole depth (None if the side is empty).
    """
    if notional_atoms <= 0:
        raise ValueError(f"impact notional must be positive, got {notional_atoms}")
    k = atoms_per_tick_lot
    left = notional_atoms
    lots_times_k = Fraction(0)  # Σ taken / p = (lots filled) × k
    for price, qty in depth:
        if price <= 0 or qty < 0:
            raise ValueError(f"bad depth level ({price}, {qty})")
        take = min(price * qty * k, left)
        if take:
            lots_times_k += Fraction(take, price)
            left -= take
        if not left:
            break
    if left and (not allow_partial or left == notional_atoms):
        return None
    return (notional_atoms - left) / lots_times_k


def premium_index(impact_bid: Fraction | int | None, impact_ask: Fraction | int | None, index_ticks: int) -> int:
    """P = [max(0, ImpactBid − Index) − max(0, Index − ImpactAsk)] / Index, in RATE_DEN units (nearest, half-even).

    A missing impact price (its side of the book cannot fill the impact
    notional) contributes 0 to its term.
    """
    if index_ticks <= 0:
        raise ValueError(f"index must be positive, got {index_ticks}")
    zero = Fraction(0)
    up = max(zero, Fraction(impact_bid) - index_ticks) if impact_bid is not None else zero
    down = max(zero, index_ticks - Fraction(impact_ask)) if impact_ask is not None else zero
    # Fraction.__round__: nearest integer, ties to even, exact
    return round((up - down) * RATE_DEN / index_ticks)


class PremiumAverage:
    """P̄ = Σ k·P_k / Σ k over the samples of one funding interval (k = 1 for the first sample)."""

    __slots__ = ("count", "weighted_sum")

    def __init__(self) -> None:
        self.count = 0
        self.weighted_sum = 0  # Σ k·P_k, RATE_DEN units

    def add(self, premium: int) -> None:
        self.count += 1
        self.weighted_sum += self.count * premium

    def average(self) -> Fraction:
        """P̄ exactly, in RATE_DEN units; 0 before the first sample (then F = I, within the clamp)."""
        n = self.count
        if not n:
            return Fraction(0)
        return Fraction(self.weighted_sum * 2, n * (n + 1))  # Σ k = n(n+1)/2

    def reset(self) -> None:
        self.count = 0
        self.weighted_sum = 0


# ------------------------------------------------------------------ the rate
def _clamp(x: Fraction, lo: int, hi: int) -> Fraction:
    return min(max(x, Fraction(lo)), Fraction(hi))


def funding_rate(
    avg_premium: Fraction | int, params: FundingParams = DEFAULT_FUNDING_PARAMS, interval_ms: int = BASE_INTERVAL_MS,
) -> int:
    """F in RATE_DEN units, on the 1e-8 grid:
        F = [P̄ + clamp(I − P̄, −clamp, +clamp)] × N / 8, rounded half-even to 1e-8, then clamp(F, floor, cap).

    `avg_premium` is P̄ in RATE_DEN units (exact); `interval_ms` the funding
    interval (N hours: the 8 h rate is divided by 8/N, so 4 h halves it).
    """
    if interval_ms <= 0:
        raise ValueError("funding interval must be positive")
    p = Fraction(avg_premium)
    f8 = p + _clamp(params.interest - p, -params.premium_clamp, params.premium_clamp)
    f = f8 * interval_ms / BASE_INTERVAL_MS
    rounded = round(f / FUNDING_RATE_QUANTUM) * FUNDING_RATE_QUANTUM  # half-even to 1e-8, exact
    return min(max(rounded, params.rate_floor), params.cap)


# ------------------------------------------------------------------ schedule
class FundingSchedule(NamedTuple):
    """Funding times every `interval_ms` of virtual time from `epoch_ms`: T = epoch + n × interval.

    With the default epoch 0 (1970-01-01 00:00 UTC) and 8 h this is Binance's
    00:00, 08:00 and 16:00 UTC. Only positions open AT a funding time pay or
    receive (see the module docstring for what "at" means in the engine).
    """

    interval_ms: int = BASE_INTERVAL_MS
    epoch_ms: int = 0

    @classmethod
    def every_hours(cls, hours: int, epoch_ms: int = 0) -> FundingSchedule:
        if hours <= 0:
            raise ValueError("funding interval must be positive")
        return cls(hours * HOUR_MS, epoch_ms)

    def is_funding_time(self, ts: int) -> bool:
        return (ts - self.epoch_ms) % self.interval_ms == 0

    def last_funding_time(self, ts: int) -> int:
        """The latest funding time ≤ ts (the start of the interval ts is in)."""
        return ts - (ts - self.epoch_ms) % self.interval_ms

    def next_funding_time(self, ts: int) -> int:
        """The earliest funding time > ts (at a funding time: the one after it, as Binance's nextFundingTime)."""
        return self.last_funding_time(ts) + self.interval_ms

    def time_to_next(self, ts: int) -> int:
        """Milliseconds from ts to the next funding time, in (0, interval]."""
        return self.next_funding_time(ts) - ts

    def due(self, prev_ts: int, now_ts: int) -> list[int]:
        """Funding times T with prev_ts < T ≤ now_ts, in order: what a clock advance must settle."""
        return _grid_times(prev_ts, now_ts, self.interval_ms, self.epoch_ms)

    def sample_times(self, prev_ts: int, now_ts: int, period_ms: int = PREMIUM_SAMPLE_MS) -> list[int]:
        """Premium sample times s (every `period_ms` from the epoch) with prev_ts < s ≤ now_ts, in order.

        The samples of the interval ending at T are those in (T − interval, T],
        so the sample at T is taken before the settlement at T.
        """
        return _grid_times(prev_ts, now_ts, period_ms, self.epoch_ms)


def _grid_times(prev_ts: int, now_ts: int, period: int, epoch: int) -> list[int]:
    first = prev_ts - (prev_ts - epoch) % period + period
    return list(range(first, now_ts + 1, period))


# ------------------------------------------------------------------ per-symbol model
class FundingRateModel:
    """One symbol's premium samples over the current interval and its funding rates.

    `last_rate` is the rate settled at the last funding time (0 before the
    first): the "last funding rate" of the mark price's Price1.
    """

    __slots__ = ("atoms_per_tick_lot", "impact_notional", "last_rate", "params", "premiums", "schedule")

    def __init__(
        self, schedule: FundingSchedule, impact_notional_atoms: int, atoms_per_tick_lot: int,
        params: FundingParams = DEFAULT_FUNDING_PARAMS,
    ) -> None:
        self.schedule = schedule
        self.impact_notional = impact_notional_atoms
        self.atoms_per_tick_lot = atoms_per_tick_lot
        self.params = params
        self.premiums = PremiumAverage()
        self.last_rate = 0

    def sample(self, index_ticks: int, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]) -> int:
        """Take one premium sample P_k from the book's depth (best first) and the index; return it."""
        ib = impact_price(bids, self.impact_notional, self.atoms_per_tick_lot)
        ia = impact_price(asks, self.impact_notional, self.atoms_per_tick_lot)
        p = premium_index(ib, ia, index_ticks)
        self.premiums.add(p)
        return p

    def predicted_rate(self) -> int:
        """The rate the samples so far would give (Binance's estimated funding rate)."""
        return funding_rate(self.premiums.average(), self.params, self.schedule.interval_ms)

    def settle(self) -> int:
        """At a funding time: the rate of the interval ending now; becomes `last_rate`; samples start over."""
        rate = self.predicted_rate()
        self.last_rate = rate
        self.premiums.reset()
        return rate


# ------------------------------------------------------------------ payments
class FundingSettlement(NamedTuple):
    """Wallet changes per position (negative: pays), in the order given, and the remainder for fee income."""

    payments: list[int]
    remainder: int


def funding_payments(
    positions: Sequence[int], mark_ticks: int, rate: int, atoms_per_tick_lot: int,
) -> FundingSettlement:
    """Each position's funding: exact amount q × mark × k × F / RATE_DEN atoms, paid by longs when F > 0.

    `positions` are the signed sizes in lots (long > 0) of every position open
    in the symbol at the settlement time; they net to zero (funding is peer to
    peer). Each wallet change is floor(−q × mark × k × F / RATE_DEN): payers'
    amounts round up, receivers' down, so Σ changes ≤ 0 and the remainder
    −Σ changes ≥ 0 (less than one atom per position) is the fee income.
    """
    if sum(positions) != 0:
        raise ValueError(f"positions must net to zero (funding is peer to peer), got {sum(positions)}")
    if mark_ticks <= 0:
        raise ValueError(f"mark price must be positive, got {mark_ticks}")
    per_lot = mark_ticks * atoms_per_tick_lot * rate  # atoms × RATE_DEN paid by one long lot
    payments = [(-q * per_lot) // RATE_DEN for q in positions]
    return FundingSettlement(payments, -sum(payments))
