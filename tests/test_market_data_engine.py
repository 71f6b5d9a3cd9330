"""Index, mark and funding through the engine (build_exchange + EngineClock), mechanics.md Part 1 and §1.1–1.3.

- Index: weighted average of the sources; a source more than 5% off the median of all sources gets
  weight 0; more than one off: the median; a missing source is dropped; weights renormalised.
- Mark: median(Price1, Price2, last), Price1 = index × (1 + last funding rate × time to next funding /
  interval), Price2 = index + moving average of (mid − index) over 30 s of 1 s samples.
- Funding: F = P̄ + clamp(I − P̄, ±0.05%), I = 0.01% per 8 h, divided by 8/N for an N-hour interval.

Units: BTCUSDT prices in ticks of 0.10 (80,000.0 = 800,000), lots of 0.001 BTC, money in 1e-8 USDT,
rates in 1e-12 (exchange.funding.RATE_DEN: 0.01% = 100,000,000).
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from exchange.assembly import build_exchange
from exchange.commands import CancelAll, Deposit, PlaceOrder, UpdateIndex
from exchange.enums import Side
from exchange.events import FundingSettled, IndexPriceUpdated, MarkPriceUpdated, PremiumIndexSampled, Trade
from exchange.funding import FundingSchedule
from exchange.price_paths import IndexFeed, RandomWalk, Shock, WeightedSource
from exchange.testkit import EngineClock

SYM = "BTCUSDT"
U = 10**8
HOUR = 3_600_000
H8 = 8 * HOUR


def _engine(schedule: FundingSchedule | None = None):
    engine = build_exchange(funding_schedule=schedule)
    for account in (1, 2, 3):
        engine.apply(Deposit(account=account, asset="USDT", amount=1_000_000 * U))
    return engine


def _index(engine, *sources) -> list:
    return engine.apply(UpdateIndex(symbol=SYM, sources=list(sources)))


def _index_event(events: list) -> int:
    (e,) = [x for x in events if isinstance(x, IndexPriceUpdated)]
    return e.index_price


def _marks(events: list) -> list[tuple[int, int]]:
    return [(e.ts, e.mark_price) for e in events if isinstance(e, MarkPriceUpdated)]


def _trade(engine, price: int, lots: int = 2) -> None:
    """Account 1 rests a sell at `price`, account 2 takes it: the last price becomes `price`."""
    engine.apply(PlaceOrder(account=1, symbol=SYM, side=Side.SELL, qty=lots, price=price))
    out = engine.apply(PlaceOrder(account=2, symbol=SYM, side=Side.BUY, qty=lots, price=price))
    assert [e.price for e in out if isinstance(e, Trade)] == [price]


def _quote(engine, bid: int, ask: int, lots: int = 2) -> None:
    """Account 3's only quotes: a bid and an ask (replacing any it had)."""
    engine.apply(CancelAll(account=3, symbol=SYM))
    engine.apply(PlaceOrder(account=3, symbol=SYM, side=Side.BUY, qty=lots, price=bid))
    engine.apply(PlaceOrder(account=3, symbol=SYM, side=Side.SELL, qty=lots, price=ask))
    book = engine.market(SYM).book
    assert (book.best_bid(), book.best_ask()) == (bid, ask)


# ------------------------------------------------------------------ index: the outlier rule
def test_three_sources_within_5pct_are_the_weighted_average_and_the_first_mark() -> None:
    engine = _engine()
    events = _index(engine, ("a", 1, 800_000), ("b", 1, 801_000), ("c", 1, 802_000))
    # (800,000 + 801,000 + 802,000) / 3 = 801,000
    assert _index_event(events) == 801_000
    # the first index gives a first mark at once
    assert [m for _, m in _marks(events)] == [801_000]


def test_one_source_more_than_5pct_off_gets_weight_zero() -> None:
    engine = _engine()
    events = _index(engine, ("a", 1, 800_000), ("b", 3, 801_000), ("c", 1, 900_000))
    # median 801,000; 5% of it is 40,050; c is 99,000 off → weight 0; a (1,000 off) and b stay:
    # (1 × 800,000 + 3 × 801,000) / (1 + 3) = 3,203,000 / 4 = 800,750
    assert _index_event(events) == 800_750


def test_two_sources_off_use_the_median() -> None:
    engine = _engine()
    events = _index(engine, ("a", 5, 700_000), ("b", 1, 800_000), ("c", 1, 900_000))
    # median 800,000; a and c are both 100,000 > 40,000 off → the median, 800,000
    # (the weighted average would be (3,500,000 + 800,000 + 900,000) / 7 = 742,857.1)
    assert _index_event(events) == 800_000


def test_a_source_going_none_is_dropped_and_weights_renormalise() -> None:
    engine = _engine()
    events = _index(engine, ("a", 1, 800_000), ("b", 1, 802_000), ("c", 2, 804_000))
    # (800,000 + 802,000 + 2 × 804,000) / 4 = 3,210,000 / 4 = 802,500
    assert _index_event(events) == 802_500
    # only c reports, and it is down: a and b keep their last prices, c is dropped
    events = _index(engine, ("c", 2, None))
    # (800,000 + 802,000) / 2 = 801,000
    assert _index_event(events) == 801_000
    assert engine.market(SYM).data.index_price == 801_000
    # c back: the three again
    assert _index_event(_index(engine, ("c", 2, 804_000))) == 802_500


def test_a_missing_source_is_not_in_the_median_either() -> None:
    engine = _engine()
    events = _index(engine, ("a", 1, 800_000), ("b", 1, 801_000), ("c", 1, None), ("d", 1, 900_000))
    # present: 800,000, 801,000, 900,000 → median 801,000; d is 99,000 > 40,050 off → weight 0
    # (800,000 + 801,000) / 2 = 800,500
    assert _index_event(events) == 800_500


def test_the_mark_follows_the_index_at_the_next_second() -> None:
    engine = _engine()
    clock = EngineClock(engine)
    _index(engine, ("a", 1, 800_000))
    events = _index(engine, ("a", 1, 790_000))
    assert not _marks(events)  # the mark is computed on the 1 s tick, not on each index update
    # empty book (Price2 = index), no trade, no funding yet (Price1 = index): mark = 790,000
    assert _marks(clock.advance_to(1_000)) == [(1_000, 790_000)]


# ------------------------------------------------------------------ Price2: the 30 s basis window
def test_basis_window_of_30_seconds_moves_price2_and_the_mark() -> None:
    engine = _engine()
    clock = EngineClock(engine)
    _index(engine, ("a", 1, 800_000))
    _trade(engine, 802_000)  # last price 80,200.0, above every Price2 below: it never is the median
    _quote(engine, 799_900, 800_100)  # mid 800,000 = index: basis 0
    # Price1 = index (no funding has been settled: last rate 0), Price2 = index + 0, last 802,000:
    # the median is 800,000, the mark it already has → nothing published for 30 s
    assert _marks(clock.advance_to(30_000)) == []
    # at 30 s the mid moves to 801,000: a basis of +1,000 ticks (+100 USDT) per sample from 31 s on
    _quote(engine, 800_900, 801_100)
    marks = dict(_marks(clock.advance_to(90_000)))
    # at 30 s + k s the window (k s, 30 s + k s] holds 30 − k samples of 0 and k of 1,000:
    # Price2 = 800,000 + 1,000 × k / 30 (rounded half-even); by hand:
    assert marks[31_000] == 800_033  # k = 1: 1,000 / 30 = 33.3
    assert marks[32_000] == 800_067  # k = 2: 66.7
    assert marks[45_000] == 800_500  # k = 15: half the window
    assert marks[59_000] == 800_967  # k = 29: 966.7, the sample at 30 s (basis 0) still in the window
    assert marks[60_000] == 801_000  # k = 30: the old samples are all out of the window
    for k in range(1, 31):
        assert marks[30_000 + k * 1_000] == 800_000 + round(Fraction(1_000 * k, 30))
    assert max(marks) == 60_000  # from then on the mark stays 801,000: nothing new to publish
    assert engine.market(SYM).mark_price == 801_000
    assert engine.apply(UpdateIndex(symbol=SYM, sources=[("a", 1, 800_000)])) == []  # unchanged: nothing to say


# ------------------------------------------------------------------ the median of three
def _after_first_funding():
    """An exchange past its first funding time (8 h) with an empty book: every premium sample was 0,
    so F = 0 + clamp(0.01% − 0, ±0.05%) = 0.01% (100,000,000 rate units) is the last funding rate."""
    engine = _engine()
    clock = EngineClock(engine)
    _index(engine, ("a", 1, 800_000))
    events = clock.advance_to(H8)
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    assert settled.rate == 100_000_000
    return engine, clock


# At 8 h + 360 s, 28,440 s are left to the next funding (16 h):
#   Price1 = 800,000 × (1 + 0.0001 × 28,440 / 28,800) = 800,000 + 80 × 0.9875 = 800,079
T = H8 + 360_000
PRICE1 = 800_079


@pytest.mark.parametrize(("last", "bid", "ask", "mark", "median_is"), [
    # Price2 = 800,000 (mid 800,000) < Price1 = 800,079 < last 800,100 → Price1
    (800_100, 799_900, 800_100, PRICE1, "Price1"),
    # last 799,000 < Price2 = 800,040 (mid of 800,030 and 800,050) < Price1 800,079 → Price2
    (799_000, 800_030, 800_050, 800_040, "Price2"),
    # Price2 = 800,000 < last 800,050 < Price1 800,079 → the last price
    (800_050, 799_900, 800_100, 800_050, "last"),
])
def test_the_mark_is_the_median_of_price1_price2_and_last(last, bid, ask, mark, median_is) -> None:
    engine, clock = _after_first_funding()
    _trade(engine, last)
    _quote(engine, bid, ask)
    events = clock.advance_to(T)
    marks = _marks(events)
    assert marks[-1][1] == mark, median_is
    assert engine.market(SYM).mark_price == mark
    (e,) = [x for x in events if isinstance(x, MarkPriceUpdated) and x.ts == marks[-1][0]]
    assert (e.index_price, e.next_funding_time) == (800_000, 2 * H8)


def test_price1_decays_toward_the_index_as_funding_nears() -> None:
    engine, clock = _after_first_funding()
    _trade(engine, 800_100)
    _quote(engine, 799_900, 800_100)  # Price2 = 800,000 < Price1 < last 800,100: the mark is Price1
    marks = _marks(clock.advance_to(T))
    # Price1 at 8 h + s = 800,000 + 80 × (28,800 − s) / 28,800 = 800,080 − s / 360:
    # 800,080 at 1 s (800,079.997 rounds up); at 180 s 800,079.5 rounds half-even to 800,080;
    # from 181 s on 800,079
    assert marks == [(H8 + 1_000, 800_080), (H8 + 181_000, 800_079)]


# ------------------------------------------------------------------ funding interval
def _funding_with_a_rich_bid(schedule: FundingSchedule | None, until: int):
    """Index 80,000.0; a bid of 0.4 BTC at 80,100.0 and an ask of 0.4 BTC at 80,120.0 for the whole interval.

    Impact notional: 200 USDT × 150 (BTCUSDT's max leverage) = 30,000 USDT; each side holds
    0.4 × 80,100 ≈ 32,040 USDT, so the impact bid is 801,000 and the impact ask 801,200 ticks.
    P = [max(0, 801,000 − 800,000) − max(0, 800,000 − 801,200)] / 800,000 = 0.125% (1,250,000,000 units).
    """
    engine = _engine(schedule)
    clock = EngineClock(engine)
    _index(engine, ("a", 1, 800_000))
    _quote(engine, 801_000, 801_200, lots=400)
    events = clock.advance_to(until)
    premiums = {e.premium for e in events if isinstance(e, PremiumIndexSampled)}
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    return premiums, settled


def test_a_4_hour_interval_halves_the_8_hour_rate() -> None:
    p8, s8 = _funding_with_a_rich_bid(None, H8)
    p4, s4 = _funding_with_a_rich_bid(FundingSchedule.every_hours(4), 4 * HOUR)
    assert p8 == p4 == {1_250_000_000}  # the same premium in every sample
    # 8 h: F = 0.125% + clamp(0.01% − 0.125%, −0.05%, +0.05%) = 0.125% − 0.05% = 0.075%
    assert (s8.funding_time, s8.rate) == (H8, 750_000_000)
    # 4 h: the same divided by 8/4 = 0.0375%
    assert (s4.funding_time, s4.rate) == (4 * HOUR, 375_000_000)


# ------------------------------------------------------------------ determinism
def _run(seed: int) -> list[tuple[int, int, int]]:
    """Three venues, each a seeded random walk from 80,000.0 under the same shock: −12% over 30 s from 20 s,
    then half of it back over 30 s. UpdateIndex every second, then the clock to that second."""
    feed = IndexFeed([
        WeightedSource(venue, weight, Shock(RandomWalk(800_000, seed * 10 + i, vol_ppm=200), start_ms=20_000,
                                            move_ppm=-120_000, duration_ms=30_000, retrace_ppm=500_000,
                                            retrace_ms=30_000))
        for i, (venue, weight) in enumerate([("a", 2), ("b", 1), ("c", 1)])
    ])
    engine = _engine()
    clock = EngineClock(engine)
    out = _index(engine, *feed.sources_at(0))
    _trade(engine, 800_000)
    _quote(engine, 799_000, 801_000)
    for t in range(1_000, 120_001, 1_000):
        out += _index(engine, *feed.sources_at(t))
        out += clock.advance_to(t)
    return [(e.ts, e.mark_price, e.index_price) for e in out if isinstance(e, MarkPriceUpdated)]


def test_a_seeded_random_walk_with_a_shock_gives_the_same_marks_twice() -> None:
    a, b = _run(7), _run(7)
    assert a == b
    assert len(a) > 60
    assert _run(8) != a
    # the shock shows: at its bottom (50 s) the index is near 800,000 × 0.88 = 704,000, while Price2
    # lags by the average basis over the window (mid 800,000 − index ≈ 96,000 × (1 + … + 30) / 900 ≈ 49,600):
    # the mark (= Price2, between the index and the last price 800,000) goes down to about 753,600
    lowest = min(m for _, m, _ in a)
    assert 700_000 < lowest < 760_000
