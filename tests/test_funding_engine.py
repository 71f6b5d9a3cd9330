"""Funding through the engine: who pays at a funding time, with the test kit's clock.

Rule (mechanics.md §1.3, exchange/funding.py FundingSchedule): the settlement at
T is applied when the clock reaches T, to the positions open at that moment;
a command stamped T comes after it. So a position closed by a trade at exactly
T pays at T, and one opened by a trade at exactly T first pays at the next
funding time. (freqtrade counts both boundaries for a trade open exactly at
00:00 and closed at 08:00; with one ordering of commands only one of the two
can hold: we keep "open when the clock reaches T", as Binance's
"positions open at the settlement time" reads.)
"""

from __future__ import annotations

from exchange.assembly import build_exchange
from exchange.commands import Deposit, PlaceOrder, SetPositionMode, UpdateIndex
from exchange.enums import PositionMode, PositionSide, Side
from exchange.events import FundingPayment, FundingSettled
from exchange.funding import RATE_DEN
from exchange.testkit import EngineClock

U = 10**8
EIGHT_HOURS = 8 * 3_600_000


def _exchange():
    engine = build_exchange()
    for account in (1, 2, 3):
        engine.apply(Deposit(account=account, asset="USDT", amount=100_000 * U))
    # one source at 80,000.0 (800,000 ticks): the index and the first mark
    engine.apply(UpdateIndex(symbol="BTCUSDT", sources=[("binance", 1, 800_000)]))
    return engine


def _trade(engine, buyer: int, seller: int, lots: int) -> None:
    engine.apply(PlaceOrder(account=seller, symbol="BTCUSDT", side=Side.SELL, qty=lots, price=800_000))
    engine.apply(PlaceOrder(account=buyer, symbol="BTCUSDT", side=Side.BUY, qty=lots, price=800_000))


def test_the_clock_goes_to_the_next_funding_time_and_longs_pay_the_interest_rate() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    _trade(engine, buyer=1, seller=2, lots=100)  # account 1 long 0.1 BTC, account 2 short
    ts, events = clock.advance_to_next("funding")
    assert ts == EIGHT_HOURS
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    # An empty book gives no impact price, so every premium sample is 0 and F = I = 0.01% (mechanics.md §1.3)
    assert settled.rate == RATE_DEN // 10_000
    pay = {e.account: e.amount for e in events if isinstance(e, FundingPayment)}
    # mark × size × F = 80,000 × 0.1 × 0.0001 = 0.8 USDT: the long pays it, the short receives it
    assert pay == {1: -80_000_000, 2: 80_000_000}
    assert settled.remainder == 0


def test_a_position_opened_exactly_at_the_funding_time_pays_from_the_next_one() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    clock.advance_to(EIGHT_HOURS)  # the settlement at 8 h runs now: nobody is open yet
    _trade(engine, buyer=1, seller=2, lots=100)  # stamped exactly 8 h
    events = clock.advance_to(2 * EIGHT_HOURS - 1)
    assert not [e for e in events if isinstance(e, FundingPayment)]
    events = clock.advance_to(2 * EIGHT_HOURS)
    assert {e.account for e in events if isinstance(e, FundingPayment)} == {1, 2}


def test_a_position_opened_just_before_the_funding_time_pays_at_it() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    clock.advance_to(EIGHT_HOURS - 1)
    _trade(engine, buyer=1, seller=2, lots=100)  # 1 ms before 8 h
    events = clock.advance_to(EIGHT_HOURS)
    assert {e.account: e.amount for e in events if isinstance(e, FundingPayment)} == {1: -80_000_000,
                                                                                       2: 80_000_000}


def test_a_position_opened_1_ms_after_the_funding_time_pays_from_the_next_one() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    events = clock.advance_to(EIGHT_HOURS + 1)  # the settlement at 8 h ran on the way: nobody was open
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    assert (settled.funding_time, settled.positions) == (EIGHT_HOURS, 0)
    _trade(engine, buyer=1, seller=2, lots=100)  # stamped 8 h + 1 ms
    events = clock.advance_to(2 * EIGHT_HOURS - 1)
    assert not [e for e in events if isinstance(e, (FundingPayment, FundingSettled))]
    events = clock.advance_to(2 * EIGHT_HOURS)
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    # empty book again: F = I = 0.01 % (mechanics.md §1.3). The mark at 16 h is the median of Price1 (index ×
    # (1 + 0.01 % × time left / 8 h), just above the index), Price2 (the index: no quotes, no basis) and the
    # last price 80,000.0: 80,000.0. So 80,000 × 0.1 × 0.0001 = 0.8 USDT, as in the first test.
    assert (settled.funding_time, settled.rate, settled.mark_price) == (2 * EIGHT_HOURS, RATE_DEN // 10_000, 800_000)
    assert {e.account: e.amount for e in events if isinstance(e, FundingPayment)} == {1: -80_000_000,
                                                                                       2: 80_000_000}


def test_a_position_closed_exactly_at_the_funding_time_still_pays_at_it() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    _trade(engine, buyer=1, seller=2, lots=100)
    events = clock.advance_to(EIGHT_HOURS)  # settles first ...
    assert {e.account for e in events if isinstance(e, FundingPayment)} == {1, 2}
    _trade(engine, buyer=2, seller=1, lots=100)  # ... then the close stamped exactly 8 h
    assert engine.clearing.open_positions["BTCUSDT"] == {}


def test_eight_hours_of_funding_in_a_few_seconds_and_money_is_conserved() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    _trade(engine, buyer=1, seller=2, lots=100)
    _trade(engine, buyer=3, seller=2, lots=37)
    settled = []
    for _ in range(3):
        _, events = clock.advance_to_next("funding")
        settled += [e for e in events if isinstance(e, FundingSettled)]
    assert [s.funding_time for s in settled] == [EIGHT_HOURS, 2 * EIGHT_HOURS, 3 * EIGHT_HOURS]
    for s in settled:
        assert s.paid == s.received + s.remainder  # to the atom
    c = engine.clearing
    assert c.held("USDT") == c.treasury.deposits["USDT"]


def test_next_scheduled_events_in_order() -> None:
    engine = _exchange()
    clock = EngineClock(engine)
    assert clock.next_scheduled("mark") == 1_000  # a mark tick every second
    assert clock.next_scheduled("premium") == 5_000  # a premium sample every 5 s
    assert clock.next_scheduled("funding") == EIGHT_HOURS
    ts, _ = clock.advance_to_next()
    assert ts == 1_000


def test_hedge_cross_legs_both_funded_in_one_wallet() -> None:
    engine = build_exchange()
    for account in (1, 2, 3):
        engine.apply(Deposit(account=account, asset="USDT", amount=100_000 * U))
    engine.apply(SetPositionMode(account=1, position_mode=PositionMode.HEDGE))
    engine.apply(UpdateIndex(symbol="BTCUSDT", sources=[("binance", 1, 800_000)]))
    # account 1, hedge, cross: LONG 0.1 BTC bought from account 2, SHORT 0.05 BTC sold to account 3, at 80,000
    engine.apply(PlaceOrder(account=2, symbol="BTCUSDT", side=Side.SELL, qty=100, price=800_000))
    engine.apply(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.BUY, qty=100, price=800_000,
                            position_side=PositionSide.LONG))
    engine.apply(PlaceOrder(account=3, symbol="BTCUSDT", side=Side.BUY, qty=50, price=800_000))
    engine.apply(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.SELL, qty=50, price=800_000,
                            position_side=PositionSide.SHORT))
    c = engine.clearing
    before = c.accounts[1].wallet["USDT"]
    events = EngineClock(engine).advance_to(EIGHT_HOURS)
    # F = 0.01 % (empty book), mark 80,000: the LONG pays 80,000 × 0.1 × 0.0001 = 0.8 USDT, the SHORT receives
    # 80,000 × 0.05 × 0.0001 = 0.4 USDT: the wallet they share goes down by 0.4 USDT
    pay = {(e.account, e.position_side): e for e in events if isinstance(e, FundingPayment)}
    assert pay[(1, PositionSide.LONG)].amount == -80_000_000
    assert pay[(1, PositionSide.SHORT)].amount == 40_000_000
    assert c.accounts[1].wallet["USDT"] == before - 40_000_000
    last = [e for e in events if isinstance(e, FundingPayment) and e.account == 1][-1]
    assert last.balance == c.accounts[1].wallet["USDT"]
    assert c.held("USDT") == c.treasury.deposits["USDT"]


def test_each_symbol_funds_on_its_own_schedule() -> None:
    """Funding settings per symbol (mechanics.md §1.3: an N-hour interval is the symbol's): ETHUSDT every 4 h,
    BTCUSDT at the default 8 h, in one engine. Over 8 h ETHUSDT settles at 4 h and 8 h, BTCUSDT at 8 h only."""
    from exchange.funding import FundingSchedule

    engine = build_exchange(funding_schedule={"ETHUSDT": FundingSchedule.every_hours(4)})
    engine.apply(UpdateIndex(symbol="BTCUSDT", sources=[("a", 1, 800_000)]))
    engine.apply(UpdateIndex(symbol="ETHUSDT", sources=[("a", 1, 300_000)]))
    clock = EngineClock(engine)
    settled = [(e.symbol, e.funding_time) for e in clock.advance_to(EIGHT_HOURS) if isinstance(e, FundingSettled)]
    assert sorted(settled) == [("BTCUSDT", EIGHT_HOURS), ("ETHUSDT", EIGHT_HOURS // 2), ("ETHUSDT", EIGHT_HOURS)]
