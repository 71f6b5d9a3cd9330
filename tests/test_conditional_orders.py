"""Conditional (algo) orders through the engine: stops, take-profits and trailing stops.

Rules (binance-api.md §0 item 1 and §4.3.4; exchange/conditional.py states them as):
- STOP / STOP_MARKET: a BUY triggers when the price rises to the trigger (price ≥ trigger),
  a SELL when it falls to it (price ≤ trigger).
- TAKE_PROFIT / TAKE_PROFIT_MARKET: the reverse (BUY: price ≤ trigger; SELL: price ≥ trigger).
- TRAILING_STOP_MARKET: from its activation price on (default: at once) a SELL tracks the
  highest price and triggers at highest × (1 − callback); a BUY tracks the lowest and triggers
  at lowest × (1 + callback). Callback 0.1% .. 10%.
- The price is the mark (MARK_PRICE) or the last trade (CONTRACT_PRICE).
- A conditional order that would trigger at once is rejected: -2021 "Order would immediately trigger".
- closePosition closes the whole position at trigger time (reduce-only); with no position there is
  nothing to close and the trigger expires.

Units: prices in ticks of 0.10 (80,000.0 = 800,000), quantities in lots of 0.001 BTC, money in
atoms of 1e-8 USDT. Two lots at 80,000 are 160 USDT, above the 100 USDT minimum notional.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exchange.assembly import build_exchange
from exchange.commands import (
    CancelAll,
    CancelStopOrder,
    Deposit,
    PlaceOrder,
    PlaceStopOrder,
    SetMarginMode,
    SetMarkPrice,
    SetPositionMode,
    UpdateIndex,
)
from exchange.conditional import StopType, WorkingType
from exchange.enums import (
    CancelReason,
    MarginMode,
    OrderType,
    PositionMode,
    PositionSide,
    RejectReason,
    Side,
    TimeInForce,
)
from exchange.events import (
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    StopOrderAccepted,
    StopOrderCanceled,
    StopTriggered,
    Trade,
)
from exchange.testkit import EngineClock

SYM = "BTCUSDT"
U = 10**8  # atoms per USDT
MARK = WorkingType.MARK_PRICE
LAST = WorkingType.CONTRACT_PRICE
BUY, SELL = Side.BUY, Side.SELL

TRADER = 1  # owns the conditional orders
MAKER = 7  # provides liquidity for triggered orders
BUYER, SELLER = 8, 9  # cross with each other to set the last price


class Venue:
    """A full exchange (build_exchange) with funded accounts and the mark at 80,000.0."""

    def __init__(self, mark: int = 800_000, trader_usdt: int = 1_000_000) -> None:
        self.engine = build_exchange()
        self.apply(Deposit(account=TRADER, asset="USDT", amount=trader_usdt * U))
        for account in (2, 3, 4, 5, 6, MAKER, BUYER, SELLER):
            self.apply(Deposit(account=account, asset="USDT", amount=1_000_000 * U))
        self.apply(SetMarkPrice(symbol=SYM, price=mark))

    def apply(self, cmd) -> list:
        return self.engine.apply(cmd)

    def mark(self, price: int) -> list:
        return self.apply(SetMarkPrice(symbol=SYM, price=price))

    def trade(self, price: int, qty: int = 2, buyer: int = BUYER, seller: int = SELLER) -> list:
        """The seller rests a limit order at `price`, the buyer takes it: one trade, last price = `price`."""
        out = self.apply(PlaceOrder(account=seller, symbol=SYM, side=SELL, qty=qty, price=price))
        out += self.apply(PlaceOrder(account=buyer, symbol=SYM, side=BUY, qty=qty, price=price))
        trades = [e for e in out if isinstance(e, Trade)]
        assert trades and trades[0].price == price
        return out

    def move(self, working_type: WorkingType, price: int) -> list:
        """Move one price source to `price`: the mark directly, the last price by a trade."""
        return self.mark(price) if working_type is MARK else self.trade(price)

    def stop(self, account: int = TRADER, **kw) -> list:
        kw.setdefault("qty", 2)
        return self.apply(PlaceStopOrder(account=account, symbol=SYM, **kw))

    def position(self, account: int) -> int:
        assert self.engine.clearing is not None
        pos = self.engine.clearing.accounts[account].positions.get((SYM, PositionSide.BOTH))
        return pos.qty if pos is not None else 0


def one(events: list, kind: type):
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, (kind.__name__, events)
    return found[0]


def none_of(events: list, kind: type) -> None:
    assert not [e for e in events if isinstance(e, kind)], events


def accepted_id(events: list) -> int:
    return one(events, StopOrderAccepted).stop_id


# ------------------------------------------------------------------ the trigger rules, by type and side
# (stop type, side) → does it fire when the price rises to the trigger ("up") or falls to it ("down")?
DIRECTION = {
    (StopType.STOP_MARKET, BUY): "up", (StopType.STOP_MARKET, SELL): "down",
    (StopType.STOP, BUY): "up", (StopType.STOP, SELL): "down",
    (StopType.TAKE_PROFIT_MARKET, BUY): "down", (StopType.TAKE_PROFIT_MARKET, SELL): "up",
    (StopType.TAKE_PROFIT, BUY): "down", (StopType.TAKE_PROFIT, SELL): "up",
}
# with both prices at 80,000.0: an "up" stop at 81,000.0, a "down" stop at 79,000.0
UP_TRIGGER, DOWN_TRIGGER = 810_000, 790_000


def _limit_price(stop_type: StopType, side: Side, trigger: int) -> int:
    """The limit of a STOP / TAKE_PROFIT: 50.0 (500 ticks) beyond the trigger in the order's direction."""
    if stop_type.is_market:
        return 0
    return trigger + 500 if side is BUY else trigger - 500


CASES = [(t, s, w) for (t, s) in DIRECTION for w in (MARK, LAST)]


def _ids(case) -> str:
    t, s, w = case
    return f"{t.value}-{s.value}-{w.value}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_each_type_triggers_on_its_own_source_exactly_at_its_trigger(case) -> None:
    stop_type, side, wt = case
    v = Venue()
    v.trade(800_000)  # both sources at 80,000.0
    up = DIRECTION[(stop_type, side)] == "up"
    trigger = UP_TRIGGER if up else DOWN_TRIGGER
    price = _limit_price(stop_type, side, trigger)
    sid = accepted_id(v.stop(side=side, stop_type=stop_type, working_type=wt, trigger_price=trigger, price=price,
                             client_order_id="c1"))
    other = LAST if wt is MARK else MARK
    # the other source reaching the trigger does nothing
    none_of(v.move(other, trigger), StopTriggered)
    # one tick short of the trigger on its own source: nothing
    none_of(v.move(wt, trigger - 1 if up else trigger + 1), StopTriggered)
    assert sid in v.engine.stop_orders
    # at the trigger exactly (≥ for "up", ≤ for "down"): it fires, once
    events = v.move(wt, trigger)
    fired = one(events, StopTriggered)
    assert (fired.stop_id, fired.account, fired.client_order_id) == (sid, TRADER, "c1")
    assert fired.working_type is wt
    assert fired.trigger_price == trigger
    assert fired.price == trigger  # the source price that reached it
    assert fired.outcome == "PLACED"
    placed = [e for e in events if isinstance(e, OrderAccepted) and e.account == TRADER]
    assert len(placed) == 1
    order = placed[0]
    assert fired.order_id == order.order_id
    assert order.side is side and order.qty == 2
    if stop_type.is_market:
        assert order.order_type is OrderType.MARKET
    else:
        assert order.order_type is OrderType.LIMIT and order.price == price
    assert sid not in v.engine.stop_orders
    # gone: crossing again does not fire it a second time
    v.apply(CancelAll(account=TRADER, symbol=SYM))  # (a resting limit would take the next test trade)
    beyond = trigger + 1_000 if up else trigger - 1_000
    none_of(v.move(wt, beyond), StopTriggered)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_stop_already_crossed_is_rejected_with_2021(case) -> None:
    stop_type, side, wt = case
    v = Venue()
    v.trade(800_000)  # mark and last price both 80,000.0
    up = DIRECTION[(stop_type, side)] == "up"
    # at the current price the rule (≥ / ≤) already holds: would trigger at once
    for trigger in (800_000, 799_000 if up else 801_000):
        events = v.stop(side=side, stop_type=stop_type, working_type=wt, trigger_price=trigger,
                        price=_limit_price(stop_type, side, trigger))
        rej = one(events, OrderRejected)
        assert rej.reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
        assert rej.reason.binance_code == -2021
        assert rej.command == "PlaceStopOrder"
        none_of(events, StopOrderAccepted)
    # one tick on the safe side is accepted
    trigger = 800_001 if up else 799_999
    accepted_id(v.stop(side=side, stop_type=stop_type, working_type=wt, trigger_price=trigger,
                       price=_limit_price(stop_type, side, trigger)))
    assert len(v.engine.stop_orders) == 1


@pytest.mark.parametrize("wt", [MARK, LAST])
def test_would_trigger_is_judged_on_the_stops_own_source(wt) -> None:
    v = Venue(mark=800_000)
    v.trade(805_000)  # last price 80,500.0, mark still 80,000.0
    # a BUY STOP_MARKET at 80,300.0: below the last price (crossed), above the mark (not crossed)
    events = v.stop(side=BUY, stop_type=StopType.STOP_MARKET, working_type=wt, trigger_price=803_000)
    if wt is LAST:
        assert one(events, OrderRejected).reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
    else:
        accepted_id(events)


# ------------------------------------------------------------------ cancel
def test_cancel_by_id_and_by_client_id() -> None:
    v = Venue()
    a = accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000))
    b = accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000,
                           client_order_id="my-sl"))
    # somebody else's id: unknown to them
    rej = one(v.apply(CancelStopOrder(account=2, symbol=SYM, stop_id=a)), OrderRejected)
    assert rej.reason is RejectReason.UNKNOWN_ORDER
    rej = one(v.apply(CancelStopOrder(account=2, symbol=SYM, client_order_id="my-sl")), OrderRejected)
    assert rej.reason is RejectReason.UNKNOWN_ORDER

    c = one(v.apply(CancelStopOrder(account=TRADER, symbol=SYM, stop_id=a)), StopOrderCanceled)
    assert (c.stop_id, c.account, c.reason) == (a, TRADER, CancelReason.USER)
    c = one(v.apply(CancelStopOrder(account=TRADER, symbol=SYM, client_order_id="my-sl")), StopOrderCanceled)
    assert (c.stop_id, c.client_order_id) == (b, "my-sl")
    assert not v.engine.stop_orders
    # twice: unknown
    for cmd in (CancelStopOrder(account=TRADER, symbol=SYM, stop_id=a),
                CancelStopOrder(account=TRADER, symbol=SYM, client_order_id="my-sl")):
        assert one(v.apply(cmd), OrderRejected).reason is RejectReason.UNKNOWN_ORDER
    # cancelled stops never fire
    none_of(v.mark(780_000), StopTriggered)


def test_client_id_is_unique_among_open_stops_and_free_again_after_cancel() -> None:
    v = Venue()
    kw = dict(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000,
              client_order_id="sl")
    sid = accepted_id(v.stop(**kw))
    assert one(v.stop(**kw), OrderRejected).reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID
    one(v.apply(CancelStopOrder(account=TRADER, symbol=SYM, stop_id=sid)), StopOrderCanceled)
    accepted_id(v.stop(**kw))


# ------------------------------------------------------------------ reduce-only and close-position
def _open(v: Venue, lots: int, price: int = 800_000) -> None:
    """Give TRADER a position of `lots` (long > 0, short < 0) against SELLER/BUYER."""
    if lots > 0:
        v.trade(price, qty=lots, buyer=TRADER, seller=SELLER)
    else:
        v.trade(price, qty=-lots, buyer=BUYER, seller=TRADER)


def test_reduce_only_stop_closes_at_most_the_position() -> None:
    v = Venue()
    _open(v, 5)  # long 0.005 BTC
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=BUY, qty=50, price=789_000))  # bids to sell into
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000,
                       qty=10, reduce_only=True))
    events = v.mark(790_000)
    assert one(events, StopTriggered).outcome == "PLACED"
    order = one(events, OrderAccepted)
    assert order.reduce_only and order.qty == 10
    # 5 lots fill (the whole position), the other 5 expire as reduce-only: the position is flat, never short
    assert sum(t.qty for t in events if isinstance(t, Trade)) == 5
    rest = one(events, OrderCanceled)
    assert (rest.canceled_qty, rest.filled_qty, rest.reason) == (5, 5, CancelReason.REDUCE_ONLY)
    assert v.position(TRADER) == 0


def test_reduce_only_stop_with_no_position_is_rejected_at_trigger() -> None:
    v = Venue()
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000,
                       reduce_only=True))
    events = v.mark(790_000)
    fired = one(events, StopTriggered)
    assert (fired.outcome, fired.reason, fired.order_id) == ("REJECTED", "REDUCE_ONLY_REJECTED", 0)
    assert one(events, OrderRejected).reason.binance_code == -2022


@pytest.mark.parametrize("long", [True, False], ids=["long", "short"])
def test_close_position_closes_the_whole_position_at_trigger_time(long: bool) -> None:
    v = Venue()
    sign = 1 if long else -1
    _open(v, 7 * sign)
    # a long closes with a SELL stop-loss below, a short with a BUY stop-loss above
    side = SELL if long else BUY
    trigger = 790_000 if long else 810_000
    acc = one(v.stop(side=side, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=trigger, qty=0,
                     close_position=True), StopOrderAccepted)
    assert acc.close_position and acc.reduce_only and acc.qty == 0
    _open(v, 5 * sign)  # the position grows to 12 lots after the stop was placed
    assert v.position(TRADER) == 12 * sign
    # liquidity on the far side
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=side.opposite, qty=100,
                       price=789_000 if long else 811_000))
    events = v.mark(trigger)
    fired = one(events, StopTriggered)
    order = one(events, OrderAccepted)
    assert fired.outcome == "PLACED" and fired.order_id == order.order_id
    assert order.side is side and order.order_type is OrderType.MARKET
    assert order.qty == 12 and order.reduce_only  # the position at trigger time, not at placement
    assert sum(t.qty for t in events if isinstance(t, Trade)) == 12
    assert v.position(TRADER) == 0


def test_close_position_without_a_position_expires() -> None:
    v = Venue()
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=0,
                       close_position=True))
    # a position that was opened and closed again before the trigger: nothing to close either
    _open(v, 3)
    _open(v, -3)
    assert v.position(TRADER) == 0
    events = v.mark(790_000)
    fired = one(events, StopTriggered)
    assert fired.outcome == "EXPIRED" and fired.order_id == 0 and fired.reason
    none_of(events, OrderAccepted)
    none_of(events, OrderRejected)
    assert not v.engine.stop_orders


def test_close_position_on_the_wrong_side_of_the_position_expires() -> None:
    v = Venue()
    _open(v, -4)  # short: a SELL closes nothing
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=0,
                       close_position=True))
    events = v.mark(790_000)
    assert one(events, StopTriggered).outcome == "EXPIRED"
    none_of(events, OrderAccepted)
    assert v.position(TRADER) == -4


# ------------------------------------------------------------------ hedge mode
def _hedge_venue() -> Venue:
    """TRADER in hedge mode, LONG 6 lots and SHORT 4 lots side by side, at 80,000.0."""
    v = Venue()
    v.apply(SetPositionMode(account=TRADER, position_mode=PositionMode.HEDGE))
    for side, pside, qty in ((BUY, PositionSide.LONG, 6), (SELL, PositionSide.SHORT, 4)):
        other = SELLER if side is BUY else BUYER
        v.apply(PlaceOrder(account=other, symbol=SYM, side=side.opposite, qty=qty, price=800_000))
        events = v.apply(PlaceOrder(account=TRADER, symbol=SYM, side=side, qty=qty, price=800_000,
                                    position_side=pside))
        assert sum(t.qty for t in events if isinstance(t, Trade)) == qty
    return v


def _leg(v: Venue, pside: PositionSide) -> int:
    assert v.engine.clearing is not None
    pos = v.engine.clearing.accounts[TRADER].positions.get((SYM, pside))
    return pos.qty if pos is not None else 0


@pytest.mark.parametrize("close_long", [True, False], ids=["long_leg", "short_leg"])
def test_hedge_close_position_stop_closes_its_leg_only(close_long: bool) -> None:
    """Hedge mode: closePosition with positionSide closes that leg (binance-api.md §4.3: in hedge mode closing is
    said by positionSide; reduceOnly is not sent). The other leg stays."""
    v = _hedge_venue()
    pside = PositionSide.LONG if close_long else PositionSide.SHORT
    side = SELL if close_long else BUY
    trigger = 790_000 if close_long else 810_000
    acc = one(v.stop(side=side, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=trigger, qty=0,
                     close_position=True, position_side=pside), StopOrderAccepted)
    assert acc.close_position and not acc.reduce_only
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=side.opposite, qty=100,
                       price=789_000 if close_long else 811_000))
    events = v.mark(trigger)
    fired = one(events, StopTriggered)
    assert (fired.outcome, fired.reason) == ("PLACED", "")
    order = one(events, OrderAccepted)
    assert (order.side, order.position_side, order.qty) == (side, pside, 6 if close_long else 4)
    assert _leg(v, pside) == 0
    other = PositionSide.SHORT if close_long else PositionSide.LONG
    assert _leg(v, other) == (-4 if close_long else 6)


def test_hedge_stop_with_reduce_only_is_rejected_at_placement() -> None:
    """As for plain orders in hedge mode (Clearing.check_order): the flag is refused, -2022."""
    v = _hedge_venue()
    events = v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=2,
                    reduce_only=True, position_side=PositionSide.LONG)
    rej = one(events, OrderRejected)
    assert rej.reason is RejectReason.REDUCE_ONLY_REJECTED and rej.reason.binance_code == -2022
    assert not v.engine.stop_orders


def test_stop_below_min_notional_is_refused_at_placement_not_when_it_fires() -> None:
    # MIN_NOTIONAL (100 USDT, binance-api.md §4.3.1) valued at the trigger (market types) or the limit price:
    # a 0.001 BTC stop-loss at 79,000 is 79 USDT. Refused now (-4164): accepted, it would be refused when it
    # fired, and the stop-loss a bot counts on would never trade.
    v = Venue()
    rej = one(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=1),
              OrderRejected)
    assert rej.reason is RejectReason.MIN_NOTIONAL and rej.reason.binance_code == -4164
    # a stop-limit is valued at its limit: trigger 79,000 but limit 101,000 x 0.001 = 101 USDT passes
    accepted_id(v.stop(side=BUY, stop_type=StopType.STOP, working_type=MARK, trigger_price=810_000,
                       price=1_010_000, qty=1))
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=2))
    # a trailing stop without an activation price is valued at the current price (the mark, 80,000: 80 USDT)
    rej = one(v.stop(side=SELL, stop_type=StopType.TRAILING_STOP_MARKET, working_type=MARK, callback_ppm=10_000,
                     qty=1), OrderRejected)
    assert rej.reason is RejectReason.MIN_NOTIONAL


def test_a_new_stop_fires_on_a_print_at_the_price_last_seen_while_no_stop_was_waiting() -> None:
    # found by the property below: a print at 80,000 checked against a waiting stop, which then goes; a print at
    # 80,050 while no stop waits (the last-price dedupe was left at 80,000); a SELL stop at 80,000 placed then
    # must fire on the next print at 80,000
    v = Venue()
    far = accepted_id(v.stop(side=BUY, stop_type=StopType.STOP_MARKET, working_type=LAST, trigger_price=900_000))
    none_of(v.trade(800_000), StopTriggered)
    v.apply(CancelStopOrder(account=TRADER, symbol=SYM, stop_id=far))
    v.trade(800_500)
    sid = accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=LAST, trigger_price=800_000))
    assert [e.stop_id for e in v.trade(800_000) if isinstance(e, StopTriggered)] == [sid]


def test_a_stop_cannot_be_gtd() -> None:
    # PlaceStopOrder has no good-till date to hand the order it places: refused now, not when it fires
    v = Venue()
    rej = one(v.stop(side=BUY, stop_type=StopType.STOP, working_type=MARK, trigger_price=810_000, price=810_000,
                     tif=TimeInForce.GTD), OrderRejected)
    assert rej.reason is RejectReason.INVALID_TIME_IN_FORCE


def test_reduce_only_and_close_position_stops_are_exempt_from_min_notional() -> None:
    v = Venue()
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=0,
                       close_position=True))
    accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000, qty=1,
                       reduce_only=True))


def test_a_waiting_stop_blocks_margin_and_position_mode_changes_as_an_open_order_does() -> None:
    # binance-api.md §4.4 -4047 / -4067: not with open orders; a stop waiting for its trigger is one (left
    # behind a position-mode change, a BOTH stop would be refused when it fired)
    v = Venue()
    sid = accepted_id(v.stop(side=SELL, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=790_000))
    mode = v.apply(SetPositionMode(account=TRADER, position_mode=PositionMode.HEDGE))
    assert one(mode, OrderRejected).reason is RejectReason.POSITION_MODE_OPEN_ORDERS
    margin = v.apply(SetMarginMode(account=TRADER, symbol=SYM, margin_mode=MarginMode.ISOLATED))
    assert one(margin, OrderRejected).reason is RejectReason.MARGIN_MODE_OPEN_ORDERS
    v.apply(CancelStopOrder(account=TRADER, symbol=SYM, stop_id=sid))
    none_of(v.apply(SetMarginMode(account=TRADER, symbol=SYM, margin_mode=MarginMode.ISOLATED)), OrderRejected)
    none_of(v.apply(SetPositionMode(account=TRADER, position_mode=PositionMode.HEDGE)), OrderRejected)


# ------------------------------------------------------------------ outcomes
def test_rejected_at_trigger_time_for_margin_with_the_reason() -> None:
    v = Venue(trader_usdt=100)  # 100 USDT
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=SELL, qty=200, price=811_000))
    # 0.1 BTC at ~81,000: 8,100 USDT notional, 405 USDT initial margin at 20x > 100 USDT.
    # Not checked at placement (no margin is held by a conditional order) ...
    accepted_id(v.stop(side=BUY, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=810_000, qty=100))
    # ... but at trigger time the market order it sends is refused
    events = v.mark(810_000)
    fired = one(events, StopTriggered)
    assert fired.outcome == "REJECTED"
    assert fired.reason == RejectReason.MARGIN_INSUFFICIENT.value
    assert fired.order_id == 0
    rej = one(events, OrderRejected)
    assert rej.reason is RejectReason.MARGIN_INSUFFICIENT and rej.reason.binance_code == -2019
    none_of(events, Trade)
    assert not v.engine.stop_orders  # a rejected trigger is not retried


def test_placed_outcome_carries_the_order_id_and_the_order_fills() -> None:
    v = Venue()
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=SELL, qty=10, price=810_500))
    accepted_id(v.stop(side=BUY, stop_type=StopType.STOP_MARKET, working_type=MARK, trigger_price=810_000, qty=4))
    events = v.mark(810_000)
    fired = one(events, StopTriggered)
    trade = one(events, Trade)
    assert fired.outcome == "PLACED" and fired.order_id == one(events, OrderAccepted).order_id
    assert trade.taker_order_id == fired.order_id and trade.qty == 4 and trade.price == 810_500
    assert v.position(TRADER) == 4


@pytest.mark.parametrize("wt", [MARK, LAST])
def test_triggered_stop_limit_rests_in_the_book_at_its_price(wt) -> None:
    v = Venue()
    v.trade(800_000)
    # STOP BUY: trigger 81,000.0, limit 81,050.0; TAKE_PROFIT SELL: trigger 81,000.0, limit 80,950.0
    sid_buy = accepted_id(v.stop(side=BUY, stop_type=StopType.STOP, working_type=wt, trigger_price=810_000,
                                 price=810_500, qty=3))
    events = v.move(wt, 810_000)
    fired = one([e for e in events if isinstance(e, StopTriggered)], StopTriggered)
    assert fired.stop_id == sid_buy and fired.outcome == "PLACED"
    order = v.engine.orders[fired.order_id]  # open: no ask at or below 81,050.0 was left
    assert (order.side, order.price, order.leaves, order.order_type) == (BUY, 810_500, 3, OrderType.LIMIT)
    book = v.engine.market(SYM).book
    assert book.best_bid() == 810_500
    # a take-profit limit on the other side
    sid_sell = accepted_id(v.stop(side=SELL, stop_type=StopType.TAKE_PROFIT, working_type=wt,
                                  trigger_price=812_000, price=811_800, qty=2))
    events = v.mark(812_000) if wt is MARK else v.trade(812_000)
    fired = next(e for e in events if isinstance(e, StopTriggered) and e.stop_id == sid_sell)
    order = v.engine.orders[fired.order_id]
    assert (order.side, order.price, order.leaves) == (SELL, 811_800, 2)
    assert book.best_ask() == 811_800


def test_mark_price_stop_fires_on_the_mark_the_market_data_model_computes() -> None:
    engine = build_exchange()
    engine.apply(Deposit(account=TRADER, asset="USDT", amount=1_000_000 * U))
    engine.apply(UpdateIndex(symbol=SYM, sources=[("a", 1, 800_000)]))  # first mark = index = 80,000.0
    clock = EngineClock(engine)
    sid = accepted_id(engine.apply(PlaceStopOrder(account=TRADER, symbol=SYM, side=SELL, qty=2,
                                                  stop_type=StopType.STOP_MARKET, working_type=MARK,
                                                  trigger_price=790_000)))
    # the index falls to 78,900.0; the mark follows at the next 1 s tick, not before
    none_of(engine.apply(UpdateIndex(symbol=SYM, sources=[("a", 1, 789_000)])), StopTriggered)
    none_of(clock.advance_to(999), StopTriggered)
    events = clock.advance_to(1_000)
    # empty book, no trade: the mark is Price2 = index (mark_price.py), 78,900.0 ≤ 79,000.0
    assert one(events, MarkPriceUpdated).mark_price == 789_000
    fired = one(events, StopTriggered)
    assert (fired.stop_id, fired.price, fired.ts) == (sid, 789_000, 1_000)


@pytest.mark.parametrize("sell_first", [False, True], ids=["buy_stop_first", "sell_stop_first"])
def test_a_price_printed_by_a_triggered_order_triggers_last_price_stops(sell_first: bool) -> None:
    """Every print is a last price (mechanics.md: stops on CONTRACT_PRICE follow the last trade), whatever
    order the stops were placed in: the outcome must not depend on the stop ids."""
    v = Venue()
    v.trade(800_000)
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=BUY, qty=10, price=789_000))
    v.apply(PlaceOrder(account=MAKER, symbol=SYM, side=SELL, qty=10, price=795_000))
    # both fire at a last price of 79,000.0: a BUY take-profit (buys at 79,500.0) and a SELL stop (sells at 78,900.0)
    first = [(2, BUY, StopType.TAKE_PROFIT_MARKET), (3, SELL, StopType.STOP_MARKET)]
    for account, side, stop_type in reversed(first) if sell_first else first:
        accepted_id(v.stop(account=account, side=side, stop_type=stop_type, working_type=LAST,
                           trigger_price=790_000))
    # a SELL stop at 78,950.0: only a trade at or below it fires it
    late = accepted_id(v.stop(account=4, side=SELL, stop_type=StopType.STOP_MARKET, working_type=LAST,
                              trigger_price=789_500))
    events = v.trade(790_000)
    prices = [e.price for e in events if isinstance(e, Trade)]
    assert 789_000 in prices  # the SELL stop's market order printed 78,900.0 ≤ 78,950.0 ...
    fired = {e.stop_id: e for e in events if isinstance(e, StopTriggered)}
    assert late in fired  # ... so the stop at 78,950.0 must have fired
    assert fired[late].price == 789_000


# ------------------------------------------------------------------ trailing stops
TRAIL = StopType.TRAILING_STOP_MARKET


def test_trailing_sell_1pct_from_a_high_of_81000_triggers_at_80190() -> None:
    v = Venue(mark=800_000)
    acc = one(v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000), StopOrderAccepted)
    # active at once from the mark 80,000.0: 80,000 × 0.99 = 79,200.0
    assert acc.trigger_price == 792_000
    sid = acc.stop_id
    none_of(v.mark(810_000), StopTriggered)
    # the high 81,000.0: 81,000 × (1 − 0.01) = 80,190.0 exactly (801,900 ticks)
    assert v.engine.stop_orders[sid].trigger_price == 801_900
    none_of(v.mark(805_000), StopTriggered)  # a fall that does not reach it: the trigger stays
    assert v.engine.stop_orders[sid].trigger_price == 801_900
    none_of(v.mark(801_901), StopTriggered)
    fired = one(v.mark(801_900), StopTriggered)
    assert (fired.stop_id, fired.trigger_price, fired.price) == (sid, 801_900, 801_900)


def test_trailing_sell_trigger_rounds_up_to_the_tick() -> None:
    v = Venue(mark=800_000)
    sid = accepted_id(v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000))
    v.mark(810_003)
    # 81,000.3 × 0.99 = 80,190.297 → 801,902.97 ticks, rounded up to 801,903 (80,190.3)
    assert v.engine.stop_orders[sid].trigger_price == 801_903
    none_of(v.mark(801_904), StopTriggered)
    assert one(v.mark(801_903), StopTriggered).stop_id == sid


def test_trailing_buy_tracks_the_low() -> None:
    v = Venue(mark=800_000)
    # 1%: from 80,000.0 → 80,000 × 1.01 = 80,800.0
    acc = one(v.stop(side=BUY, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000), StopOrderAccepted)
    assert acc.trigger_price == 808_000
    v.mark(790_003)
    # low 79,000.3 × 1.01 = 79,790.303 → 797,903.03 ticks; the mirror of the SELL rule rounds toward the
    # price (down): 797,903
    assert v.engine.stop_orders[acc.stop_id].trigger_price == 797_903
    v.mark(795_000)
    assert v.engine.stop_orders[acc.stop_id].trigger_price == 797_903
    none_of(v.mark(797_902), StopTriggered)
    fired = one(v.mark(797_903), StopTriggered)
    assert (fired.trigger_price, fired.price) == (797_903, 797_903)


def test_trailing_on_the_last_price() -> None:
    v = Venue(mark=800_000)
    v.trade(800_000)
    # BUY 2%: 80,000 × 1.02 = 81,600.0
    acc = one(v.stop(side=BUY, stop_type=TRAIL, working_type=LAST, callback_ppm=20_000), StopOrderAccepted)
    assert acc.trigger_price == 816_000
    # the mark moving does nothing to a last-price trailing stop
    v.mark(780_000)
    assert v.engine.stop_orders[acc.stop_id].trigger_price == 816_000
    v.mark(800_000)
    v.trade(795_000)  # low 79,500.0 × 1.02 = 81,090.0
    assert v.engine.stop_orders[acc.stop_id].trigger_price == 810_900
    none_of(v.trade(810_899), StopTriggered)
    fired = one(v.trade(810_900), StopTriggered)
    assert (fired.working_type, fired.price, fired.trigger_price) == (LAST, 810_900, 810_900)


def test_trailing_sell_with_an_activation_price() -> None:
    v = Venue(mark=800_000)
    acc = one(v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000, activation_price=820_000),
              StopOrderAccepted)
    assert acc.trigger_price == 0 and acc.activation_price == 820_000  # not active yet
    sid = acc.stop_id
    none_of(v.mark(815_000), StopTriggered)
    none_of(v.mark(780_000), StopTriggered)  # a fall before activation cannot trigger it
    assert v.engine.stop_orders[sid].trigger_price == 0
    v.mark(820_000)  # activated at 82,000.0: trigger 82,000 × 0.99 = 81,180.0
    assert v.engine.stop_orders[sid].trigger_price == 811_800
    none_of(v.mark(811_801), StopTriggered)
    assert one(v.mark(811_800), StopTriggered).stop_id == sid


def test_trailing_buy_with_an_activation_price() -> None:
    v = Venue(mark=800_000)
    sid = accepted_id(v.stop(side=BUY, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000,
                             activation_price=780_000))
    none_of(v.mark(785_000), StopTriggered)
    none_of(v.mark(830_000), StopTriggered)  # a rise before activation cannot trigger it
    assert v.engine.stop_orders[sid].trigger_price == 0
    v.mark(780_000)  # activated at 78,000.0: 78,000 × 1.01 = 78,780.0
    assert v.engine.stop_orders[sid].trigger_price == 787_800
    none_of(v.mark(787_799), StopTriggered)
    assert one(v.mark(787_800), StopTriggered).stop_id == sid


@pytest.mark.parametrize(("side", "activation"), [(SELL, 800_000), (SELL, 799_999), (BUY, 800_000), (BUY, 800_001)])
def test_trailing_activation_price_already_reached_is_refused(side: Side, activation: int) -> None:
    """A SELL's activation price must be above the current price and a BUY's below it: one already reached would
    activate at once, "Order would immediately trigger" (-2021, binance-api.md §4.4, the conditional whose trigger
    is already crossed). The mark is 80,000.0 (800,000 ticks); the working price is the mark."""
    v = Venue(mark=800_000)
    events = v.stop(side=side, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000, activation_price=activation)
    assert one(events, OrderRejected).reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
    # one tick away on the far side is accepted
    accepted_id(v.stop(side=side, stop_type=TRAIL, working_type=MARK, callback_ppm=10_000,
                       activation_price=800_001 if side is SELL else 799_999))


@pytest.mark.parametrize(("ppm", "ok"), [(999, False), (1_000, True), (100_000, True), (100_001, False),
                                         (0, False), (-5_000, False)])
def test_trailing_callback_must_be_between_0_1_and_10_percent(ppm: int, ok: bool) -> None:
    v = Venue()
    events = v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=ppm)
    if ok:
        accepted_id(events)
    else:
        assert one(events, OrderRejected).reason is RejectReason.INVALID_CALLBACK_RATE


def test_trailing_10pct_and_0_1pct_triggers() -> None:
    v = Venue(mark=800_000)
    wide = one(v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=100_000), StopOrderAccepted)
    narrow = one(v.stop(side=SELL, stop_type=TRAIL, working_type=MARK, callback_ppm=1_000), StopOrderAccepted)
    # 80,000 × 0.90 = 72,000.0; 80,000 × 0.999 = 79,920.0
    assert (wide.trigger_price, narrow.trigger_price) == (720_000, 799_200)


# ------------------------------------------------------------------ properties
# Prices move on a grid of 50.0 (500 ticks) between 78,500.0 and 81,500.0, ±1 tick to hit the edges.
# Within ±3.8% of each other, so every limit order of the test stays inside the ±5% price band.
GRID = st.builds(lambda k, d: 785_000 + 500 * k + d, st.integers(0, 60), st.sampled_from([-1, 0, 0, 0, 1]))
STOPPER = 3  # owns every random stop
# Limits of random STOP / TAKE_PROFIT orders, away from every price the test trades at: a triggered BUY limit
# rests at 78,000.0, a SELL at 82,000.0. They never cross each other, the test's own crossing orders never
# reach them, and a triggered market order of STOPPER only meets STOPPER's own limits (self-trade
# prevention expires it). So triggered orders never trade: the last price is only ever set by the test.
# Both stay inside the ±5% band of every mark of the grid, so such a market order is never refused for a
# counterparty price outside the band (-4131) either.
FAR_BID, FAR_ASK = 780_000, 820_000


def _fires_up(stop_type: StopType, side: Side) -> bool:
    """The rule of the module docstring, written again here: True if it fires at price ≥ trigger."""
    if stop_type is TRAIL:
        return side is BUY  # a BUY trailing stop fires when the price rises back to low × (1 + rate)
    return DIRECTION[(stop_type, side)] == "up"


def _crossed(stop_type: StopType, side: Side, trigger: int, price: int) -> bool:
    return price >= trigger if _fires_up(stop_type, side) else price <= trigger


class _Trailing:
    """An independent model of a trailing stop: activation, the extreme since then, and its trigger."""

    def __init__(self, side: Side, ppm: int, activation: int) -> None:
        self.side, self.ppm, self.activation = side, ppm, activation
        self.extreme = 0
        self.trigger = 0

    def see(self, price: int) -> None:
        sell = self.side is SELL
        if not self.extreme:
            if self.activation and (price < self.activation if sell else price > self.activation):
                return
            self.extreme = price
        else:
            self.extreme = max(self.extreme, price) if sell else min(self.extreme, price)
        if sell:  # extreme × (1 − rate), rounded up
            self.trigger = -(-self.extreme * (1_000_000 - self.ppm) // 1_000_000)
        else:  # extreme × (1 + rate), rounded down
            self.trigger = self.extreme * (1_000_000 + self.ppm) // 1_000_000


STOP_SPEC = st.fixed_dictionaries({
    "stop_type": st.sampled_from(list(StopType)),
    "side": st.sampled_from([BUY, SELL]),
    "working_type": st.sampled_from([MARK, LAST]),
    "trigger": GRID,
    "reduce_only": st.booleans(),
    "close_position": st.booleans(),
    "callback_ppm": st.sampled_from([1_000, 5_000, 10_000, 20_000, 100_000]),
    "activation": st.one_of(st.just(0), GRID),
})
MOVE = st.tuples(st.sampled_from(["mark", "trade"]), GRID)


@st.composite
def _scripts(draw) -> list:
    """A price path with up to 10 stops (Binance's limit per account and symbol) placed along it."""
    path = draw(st.lists(MOVE, min_size=5, max_size=40))
    stops = draw(st.lists(st.tuples(st.integers(0, len(path) - 1), STOP_SPEC), min_size=1, max_size=10))
    ops: list = []
    for i, move in enumerate(path):
        ops += [("stop", spec) for at, spec in stops if at == i]
        ops.append(move)
    return ops


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scripts())
def test_property_stops_fire_only_on_their_source_and_side(ops: list) -> None:
    v = Venue(mark=800_000)
    source: dict[WorkingType, int] = {MARK: 800_000, LAST: 0}  # 0: no trade yet
    open_stops: dict[int, dict] = {}  # stop id → what the test knows of it
    for op in ops:
        kind, arg = op
        if kind == "stop":
            s = arg
            stop_type, side, wt = s["stop_type"], s["side"], s["working_type"]
            close = s["close_position"] and stop_type.is_market
            limit = 0 if stop_type.is_market else (FAR_BID if side is BUY else FAR_ASK)
            events = v.stop(account=STOPPER, side=side, stop_type=stop_type, working_type=wt,
                            trigger_price=s["trigger"], qty=0 if close else 2, price=limit,
                            reduce_only=s["reduce_only"], close_position=close,
                            callback_ppm=s["callback_ppm"], activation_price=s["activation"])
            current = source[wt]
            # STOPPER never holds a position: close-position expires, reduce-only is refused, others are placed
            outcome = ("EXPIRED", None) if close else ("REJECTED", "REDUCE_ONLY_REJECTED") if s["reduce_only"] \
                else ("PLACED", None)
            act = s["activation"]
            if stop_type is TRAIL and act and current and (act <= current if side is SELL else act >= current):
                # an activation price already reached would activate at once: Binance -2021
                assert one(events, OrderRejected).reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
            elif stop_type is TRAIL:
                model = _Trailing(side, s["callback_ppm"], s["activation"])
                if current:
                    model.see(current)
                acc = one(events, StopOrderAccepted)
                assert acc.trigger_price == model.trigger
                open_stops[acc.stop_id] = {"type": stop_type, "side": side, "wt": wt, "trail": model,
                                        "outcome": outcome}
            elif current and _crossed(stop_type, side, s["trigger"], current):
                assert one(events, OrderRejected).reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
            else:
                acc = one(events, StopOrderAccepted)
                open_stops[acc.stop_id] = {"type": stop_type, "side": side, "wt": wt, "trigger": s["trigger"],
                                        "outcome": outcome}
            continue

        wt = MARK if kind == "mark" else LAST
        events = v.move(wt, arg)
        # the source values as the events report them, in order; triggered orders never trade here
        marks = [e.mark_price for e in events if isinstance(e, MarkPriceUpdated)]
        trades = [e.price for e in events if isinstance(e, Trade)]
        if wt is MARK:
            assert marks == [arg] and not trades
        else:
            assert trades == [arg] and not marks
        source[wt] = arg
        # which open stops of this source does the rule say must fire now?
        expected = set()
        for sid, st_ in open_stops.items():
            if st_["wt"] is not wt:
                continue
            if st_["type"] is TRAIL:
                st_["trail"].see(arg)
                trig = st_["trail"].trigger
                if trig and _crossed(TRAIL, st_["side"], trig, arg):
                    expected.add(sid)
            elif _crossed(st_["type"], st_["side"], st_["trigger"], arg):
                expected.add(sid)
        fired = [e for e in events if isinstance(e, StopTriggered)]
        for e in fired:
            st_ = open_stops[e.stop_id]
            assert e.working_type is st_["wt"] is wt  # never on the other source
            assert e.price == source[wt]  # the price of its own source at that moment
            assert _crossed(st_["type"], st_["side"], e.trigger_price, e.price)  # the right side of its trigger
            if st_["type"] is not TRAIL:
                assert e.trigger_price == st_["trigger"]
            else:
                assert e.trigger_price == st_["trail"].trigger
            want, reason = st_["outcome"]
            assert e.outcome == want
            if want == "PLACED":
                assert e.order_id > 0
            elif want == "REJECTED":
                assert e.reason == reason and e.order_id == 0
            event(f"{st_['type'].value} {wt.value} {e.outcome} {e.reason}")
        assert {e.stop_id for e in fired} == expected  # and a stop not fired was not crossed
        for sid in expected:
            del open_stops[sid]
        assert set(v.engine.stop_orders) == set(open_stops)
        for sid, st_ in open_stops.items():
            if st_["type"] is TRAIL:
                assert v.engine.stop_orders[sid].trigger_price == st_["trail"].trigger


TRAIL_SPEC = st.tuples(st.sampled_from([BUY, SELL]), st.sampled_from([MARK, LAST]),
                       st.integers(1_000, 100_000), st.one_of(st.just(0), GRID))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TRAIL_SPEC, min_size=1, max_size=8),
       st.lists(st.tuples(st.sampled_from(["mark", "trade"]), GRID), min_size=1, max_size=40))
def test_property_trailing_trigger_only_moves_in_the_positions_favour(stops: list, path: list) -> None:
    v = Venue(mark=800_000)
    v.trade(800_000)
    ids: dict[int, Side] = {}
    for side, wt, ppm, activation in stops:
        events = v.stop(account=STOPPER, side=side, stop_type=TRAIL, working_type=wt, callback_ppm=ppm,
                        activation_price=activation)
        if activation and (activation <= 800_000 if side is SELL else activation >= 800_000):  # already reached
            assert one(events, OrderRejected).reason is RejectReason.WOULD_IMMEDIATELY_TRIGGER
            continue
        ids[accepted_id(events)] = side
    last_trigger = {sid: v.engine.stop_orders[sid].trigger_price for sid in ids}
    for kind, price in path:
        v.move(MARK if kind == "mark" else LAST, price)
        for sid, side in ids.items():
            stop = v.engine.stop_orders.get(sid)
            if stop is None:
                continue  # triggered
            before, now = last_trigger[sid], stop.trigger_price
            if before:  # once active, a SELL's trigger never falls and a BUY's never rises
                assert now >= before if side is SELL else now <= before, (side, before, now)
            last_trigger[sid] = now

