"""Conditional orders: stops, take-profits and trailing stops, and the index that triggers them.

Binance USDⓈ-M rules (binance-api.md §0.1, §4.3.4):
- STOP / STOP_MARKET: a BUY triggers when the price rises to the trigger
  (price ≥ trigger), a SELL when it falls to it (price ≤ trigger).
- TAKE_PROFIT / TAKE_PROFIT_MARKET: the reverse (BUY: price ≤ trigger; SELL: price ≥ trigger).
- TRAILING_STOP_MARKET: from its activation price on (default: at once), a
  SELL tracks the highest price and triggers when the price falls to
  highest × (1 − callback rate); a BUY tracks the lowest and triggers at
  lowest × (1 + rate). Its trigger only ever moves in the position's favour.
- The price is the mark (`MARK_PRICE`) or the last trade (`CONTRACT_PRICE`).
- A stop that would trigger at once is rejected (-2021).

Each symbol keeps, per price source, two sorted lists: triggers that fire when
the price is at or above them, and triggers that fire at or below; a price
update pops exactly the crossed ones. Trailing stops are re-priced on every
update of their source (O(active trailing stops of the symbol)).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec
from sortedcontainers import SortedList

from exchange.enums import PositionSide, Side, TimeInForce


class StopType(StrEnum):
    STOP_MARKET = "STOP_MARKET"
    STOP = "STOP"  # stop-limit
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TAKE_PROFIT = "TAKE_PROFIT"  # take-profit limit
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"

    @property
    def is_market(self) -> bool:
        return self is not StopType.STOP and self is not StopType.TAKE_PROFIT


class WorkingType(StrEnum):
    MARK_PRICE = "MARK_PRICE"
    CONTRACT_PRICE = "CONTRACT_PRICE"  # the last trade price


#: Trailing callback rates are in ppm of the price (Binance allows 0.1% .. 10%: 1_000 .. 100_000).
CALLBACK_MIN_PPM = 1_000
CALLBACK_MAX_PPM = 100_000


class ConditionalOrder(msgspec.Struct, gc=False):
    stop_id: int
    account: int
    symbol: str
    side: Side
    stop_type: StopType
    working_type: WorkingType
    trigger_price: int  # ticks (for a trailing stop: its current trigger, 0 until activated)
    qty: int  # lots (0 with close_position)
    price: int = 0  # limit price of STOP / TAKE_PROFIT
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    close_position: bool = False
    position_side: PositionSide = PositionSide.BOTH
    client_order_id: str = ""
    callback_ppm: int = 0
    activation_price: int = 0
    extreme: int = 0  # trailing: highest (SELL) or lowest (BUY) price since activation; 0: not active yet


def fires_at_or_above(order: ConditionalOrder) -> bool:
    """True if the order triggers when the price rises to its trigger; False if when it falls to it."""
    if order.stop_type is StopType.TRAILING_STOP_MARKET:
        return order.side is Side.BUY
    stop_like = order.stop_type in (StopType.STOP, StopType.STOP_MARKET)
    return stop_like == (order.side is Side.BUY)


def crossed(order: ConditionalOrder, price: int) -> bool:
    """Has `price` reached the order's trigger?"""
    if not order.trigger_price:
        return False
    return price >= order.trigger_price if fires_at_or_above(order) else price <= order.trigger_price


def trail(order: ConditionalOrder, price: int) -> bool:
    """Move a trailing stop's extreme and trigger with a new price; True if its trigger moved.

    SELL: extreme = max price since activation, trigger = extreme × (1 − rate), rounded up (toward the price).
    BUY: extreme = min price since activation, trigger = extreme × (1 + rate), rounded down.
    """
    if not order.extreme:
        act = order.activation_price
        if act and (price < act if order.side is Side.SELL else price > act):
            return False  # not activated yet
        order.extreme = price
    elif (order.side is Side.SELL and price > order.extreme) or (order.side is Side.BUY and price < order.extreme):
        order.extreme = price
    else:
        return False
    rate = order.callback_ppm
    if order.side is Side.SELL:
        trigger = -((-order.extreme * (1_000_000 - rate)) // 1_000_000)
    else:
        trigger = order.extreme * (1_000_000 + rate) // 1_000_000
    moved = trigger != order.trigger_price
    order.trigger_price = trigger
    return moved


class TriggerIndex:
    """The resting conditional orders of one symbol and one price source, by trigger."""

    __slots__ = ("above", "below", "trailing")

    def __init__(self) -> None:
        self.above: SortedList = SortedList()  # (trigger, stop_id): fire when price ≥ trigger
        self.below: SortedList = SortedList()  # (trigger, stop_id): fire when price ≤ trigger
        self.trailing: dict[int, ConditionalOrder] = {}

    def add(self, order: ConditionalOrder) -> None:
        if order.stop_type is StopType.TRAILING_STOP_MARKET:
            self.trailing[order.stop_id] = order
        if order.trigger_price:
            (self.above if fires_at_or_above(order) else self.below).add((order.trigger_price, order.stop_id))

    def remove(self, order: ConditionalOrder) -> None:
        self.trailing.pop(order.stop_id, None)
        if order.trigger_price:
            (self.above if fires_at_or_above(order) else self.below).discard((order.trigger_price, order.stop_id))

    def update(self, price: int) -> list[int]:
        """A new price: re-trail trailing stops, then pop and return the crossed stop ids in trigger order."""
        for order in list(self.trailing.values()):
            old = order.trigger_price
            if trail(order, price) and old:
                (self.above if fires_at_or_above(order) else self.below).discard((old, order.stop_id))
            if order.trigger_price and order.trigger_price != old:
                (self.above if fires_at_or_above(order) else self.below).add((order.trigger_price, order.stop_id))
        fired: list[int] = []
        above, below = self.above, self.below
        while above and above[0][0] <= price:
            fired.append(above.pop(0)[1])
        while below and below[-1][0] >= price:
            fired.append(below.pop()[1])
        for stop_id in fired:
            self.trailing.pop(stop_id, None)
        return fired
