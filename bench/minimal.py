"""Minimal matchers: the floors the full engine is measured against.

Both do only what the benchmark's flow needs — price-time priority, GTC
limits whose remainder rests, market orders whose remainder expires, and the
engine's default self-trade prevention (EXPIRE_TAKER), so that they make the
same fills as the engine — and nothing else: no validation, no events, no
per-account or client-id indexes, no order status, no sequence numbers, no
clearing. Each counts fills and traded quantity, so the benchmark can check
that all three did the same work.

* `MinimalEngine` drives the engine's own `OrderBook` (exchange/book.py) with
  the engine's own `Order` records. The gap between it and the full engine is
  exactly what validation, events and the order indexes cost; a faster book
  speeds both up alike. This is the benchmark's `minimal`.
* `FloorEngine` is the same design written from scratch and kept lean — per
  side a dict of price levels, a SortedList of their prices, a FIFO deque per
  level, cancelled orders removed lazily (leaves 0, a live count per level) —
  with a five-field order record and no level totals: about the least pure
  Python can do with these structures. The benchmark's `floor`.
"""

from __future__ import annotations

from collections import deque

from sortedcontainers import SortedList

from exchange.book import OrderBook
from exchange.enums import OrderStatus, OrderType, SelfTradePrevention, Side, TimeInForce
from exchange.orders import Order

_SIDES = (Side.BUY, Side.SELL)
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_GTC, _IOC = TimeInForce.GTC, TimeInForce.IOC
_EXPIRE_TAKER = SelfTradePrevention.EXPIRE_TAKER
_NEW = OrderStatus.NEW


class MinimalEngine:
    """The engine's OrderBook and Order, without the engine. Side 0 = buy, 1 = sell; price 0 = market."""

    __slots__ = ("symbol", "book", "orders", "fills", "traded_qty", "unknown_cancels")

    def __init__(self, symbol: str = "BTCUSDT") -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.orders: dict[int, Order] = {}  # resting orders by id
        self.fills = 0
        self.traded_qty = 0
        self.unknown_cancels = 0

    def place(self, oid: int, account: int, side: int, price: int, qty: int) -> None:
        book = self.book
        if price:
            order = Order(oid, account, self.symbol, _SIDES[side], _LIMIT, _GTC, price, qty, qty,
                          0, 0, "", False, _EXPIRE_TAKER, _NEW, 0)
            if book.crosses(order.side, price) and self._take(order, price):
                return
            if order.leaves:
                book.add(order)
                self.orders[oid] = order
        else:
            order = Order(oid, account, self.symbol, _SIDES[side], _MARKET, _IOC, 0, qty, qty,
                          0, 0, "", False, _EXPIRE_TAKER, _NEW, 0)
            self._take(order, None)  # the remainder, if any, expires

    def _take(self, order: Order, limit: int | None) -> bool:
        """Match `order`; True if self-trade prevention expired it."""
        steps, expired = self.book.match(order, limit)
        orders = self.orders
        for maker, qty in steps:
            self.fills += 1
            self.traded_qty += qty
            if not maker.leaves:
                del orders[maker.order_id]
        return expired

    def cancel(self, oid: int) -> None:
        order = self.orders.pop(oid, None)
        if order is None:
            self.unknown_cancels += 1
            return
        self.book.remove(order)
        order.leaves = 0

    def resting(self) -> int:
        return len(self.orders)


class FloorOrder:
    __slots__ = ("oid", "account", "side", "price", "leaves")

    def __init__(self, oid: int, account: int, side: int, price: int, leaves: int) -> None:
        self.oid = oid
        self.account = account
        self.side = side
        self.price = price
        self.leaves = leaves


class FloorLevel:
    __slots__ = ("orders", "count")

    def __init__(self) -> None:
        self.orders: deque[FloorOrder] = deque()
        self.count = 0  # live orders (the deque may also hold cancelled ones, leaves 0)


class FloorEngine:
    """The lean floor. Side 0 = buy, 1 = sell; prices in ticks; price 0 = market."""

    __slots__ = ("levels", "prices", "orders", "fills", "traded_qty", "unknown_cancels")

    def __init__(self) -> None:
        self.levels: tuple[dict[int, FloorLevel], dict[int, FloorLevel]] = ({}, {})
        self.prices: tuple[SortedList, SortedList] = (SortedList(), SortedList())
        self.orders: dict[int, FloorOrder] = {}  # resting orders by id
        self.fills = 0
        self.traded_qty = 0
        self.unknown_cancels = 0

    def place(self, oid: int, account: int, side: int, price: int, qty: int) -> None:
        prices = self.prices[1 - side]
        # Take liquidity if the order crosses (a market order always tries).
        if prices and (not price or (prices[0] <= price if side == 0 else prices[-1] >= price)):
            qty = self._take(account, side, price, qty)
            if qty < 0:  # self-trade prevention expired the taker
                return
        if qty and price:
            order = FloorOrder(oid, account, side, price, qty)
            levels = self.levels[side]
            level = levels.get(price)
            if level is None:
                level = levels[price] = FloorLevel()
                self.prices[side].add(price)
            level.orders.append(order)
            level.count += 1
            self.orders[oid] = order

    def _take(self, account: int, side: int, limit: int, qty: int) -> int:
        """Match up to `limit` (0: none); return the quantity left, or -1 if self-trade prevention stopped it."""
        opposite = 1 - side
        levels = self.levels[opposite]
        prices = self.prices[opposite]
        orders = self.orders
        is_buy = side == 0
        best = 0 if is_buy else -1
        fills = traded = 0
        stopped = False
        while qty and prices:
            price = prices[best]
            if limit and (price > limit if is_buy else price < limit):
                break
            level = levels[price]
            queue = level.orders
            while qty and queue:
                maker = queue[0]
                leaves = maker.leaves
                if not leaves:  # cancelled earlier: drop it now
                    queue.popleft()
                    continue
                if maker.account == account:
                    stopped = True
                    break
                if qty < leaves:
                    maker.leaves = leaves - qty
                    traded += qty
                    qty = 0
                else:
                    maker.leaves = 0
                    traded += leaves
                    qty -= leaves
                    queue.popleft()
                    level.count -= 1
                    del orders[maker.oid]
                fills += 1
            if not level.count:
                del levels[price]
                prices.pop(best)  # it is the best price: cheaper than remove(price)
            if stopped:
                break
        self.fills += fills
        self.traded_qty += traded
        return -1 if stopped else qty

    def cancel(self, oid: int) -> None:
        order = self.orders.pop(oid, None)
        if order is None:
            self.unknown_cancels += 1
            return
        levels = self.levels[order.side]
        level = levels[order.price]
        order.leaves = 0
        level.count -= 1
        if not level.count:
            del levels[order.price]
            self.prices[order.side].remove(order.price)
        elif len(level.orders) > 2 * level.count + 16:  # too many dead entries: compact, as the engine's book does
            level.orders = deque(o for o in level.orders if o.leaves)

    def resting(self) -> int:
        return len(self.orders)
