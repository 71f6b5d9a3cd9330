"""A price-time priority order book for one symbol.

Each side keeps a dict of price levels and a sorted list of their prices, so
the best price is O(1) to read and a new level O(log n) to add. A level is a
FIFO deque; cancelled orders are removed lazily (their `leaves` is set to 0
and the level's totals are adjusted at once), and a level compacts itself
when dead entries outnumber live ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from sortedcontainers import SortedList

from exchange.enums import SelfTradePrevention, Side
from exchange.orders import Order

_EXPIRE_TAKER = SelfTradePrevention.EXPIRE_TAKER
_EXPIRE_MAKER = SelfTradePrevention.EXPIRE_MAKER
_EXPIRE_BOTH = SelfTradePrevention.EXPIRE_BOTH
_STP_NONE = SelfTradePrevention.NONE
# Bound once: reading `Side.BUY` goes through the enum class on every call.
_BUY = Side.BUY


class PriceLevel:
    """The resting orders at one price, oldest first, with their live totals."""

    __slots__ = ("price", "orders", "qty", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.qty = 0  # Σ leaves of live orders
        self.count = 0  # number of live orders

    def live(self) -> Iterator[Order]:
        return (o for o in self.orders if o.leaves)


class BookSide:
    """One side of the book: levels by price, and the prices sorted ascending."""

    __slots__ = ("levels", "prices", "is_bid")

    def __init__(self, is_bid: bool) -> None:
        self.levels: dict[int, PriceLevel] = {}
        self.prices: SortedList = SortedList()
        self.is_bid = is_bid

    def best(self) -> int | None:
        prices = self.prices
        if not prices:
            return None
        return prices[-1] if self.is_bid else prices[0]

    def by_priority(self) -> Iterator[PriceLevel]:
        """Levels from the best price outward."""
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        levels = self.levels
        return (levels[p] for p in list(prices))


#: One step of a match: (maker, qty traded), or (maker, 0) when self-trade prevention expired the maker.
MatchStep = tuple[Order, int]


class OrderBook:
    """Resting limit orders of one symbol, matched by price then time."""

    __slots__ = ("symbol", "bids", "asks")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(True)
        self.asks = BookSide(False)

    def side_of(self, side: Side) -> BookSide:
        return self.bids if side is _BUY else self.asks

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def add(self, order: Order) -> None:
        """Rest `order` at the back of its price level."""
        side = self.bids if order.side is _BUY else self.asks
        level = side.levels.get(order.price)
        if level is None:
            level = side.levels[order.price] = PriceLevel(order.price)
            side.prices.add(order.price)
        level.orders.append(order)
        level.qty += order.leaves
        level.count += 1

    def remove(self, order: Order) -> None:
        """Take a resting order out of the book; the caller then zeroes its `leaves`."""
        side = self.bids if order.side is _BUY else self.asks
        level = side.levels[order.price]
        level.qty -= order.leaves
        level.count -= 1
        if level.count == 0:
            del side.levels[order.price]
            side.prices.remove(order.price)
        elif len(level.orders) > 2 * level.count + 16:
            level.orders = deque(o for o in level.orders if o.leaves and o is not order)

    def reduce(self, order: Order, delta: int) -> None:
        """Lower a resting order's leaves by `delta` in place, keeping its priority."""
        side = self.bids if order.side is _BUY else self.asks
        side.levels[order.price].qty -= delta
        order.leaves -= delta

    def crosses(self, side: Side, price: int) -> bool:
        """Would a limit order of `side` at `price` take liquidity?"""
        # Reads the best price in place rather than through best(): this runs for every limit order.
        if side is _BUY:
            asks = self.asks.prices
            return bool(asks) and asks[0] <= price
        bids = self.bids.prices
        return bool(bids) and bids[-1] >= price

    def fillable_qty(self, side: Side, price: int | None, account: int, stp: SelfTradePrevention, want: int) -> int:
        """How much an order could fill now (up to `want`), self-trade prevention included.

        `price` None means a market order. Used for FOK, and for a market
        order's PERCENT_PRICE rule (what it could fill inside the band against
        what it could fill at all): it walks orders, not only level totals,
        because an own order on the way can stop the taker.
        """
        got = 0
        opposite = self.asks if side is _BUY else self.bids
        levels = opposite.levels
        # from the best price outward, lazily: the walk reads the book and usually stops after a few levels
        for level_price in iter(opposite.prices) if side is _BUY else reversed(opposite.prices):
            if price is not None and (level_price > price if side is _BUY else level_price < price):
                break
            level = levels[level_price]
            if stp is _STP_NONE:
                got += level.qty
            else:
                for maker in level.live():
                    if maker.account == account:
                        if stp is _EXPIRE_MAKER:
                            continue
                        return got
                    got += maker.leaves
                    if got >= want:
                        return want
            if got >= want:
                return want
        return got

    def match(self, taker: Order, limit: int | None) -> tuple[list[MatchStep], bool]:
        """Match `taker` against the opposite side up to price `limit` (None: market).

        Updates makers and the book; returns the steps in order and whether
        self-trade prevention expired the taker. The caller books the taker's
        side of each fill.
        """
        steps: list[MatchStep] = []
        is_buy = taker.side is _BUY
        opposite = self.asks if is_buy else self.bids
        best = 0 if is_buy else -1  # index of the best price in `prices`
        levels = opposite.levels
        prices = opposite.prices
        remaining = taker.leaves
        account = taker.account
        stp = taker.stp
        check_stp = stp is not _STP_NONE
        while remaining and prices:
            price = prices[best]
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            level = levels[price]
            orders = level.orders
            while remaining and orders:
                maker = orders[0]
                leaves = maker.leaves
                if not leaves:
                    orders.popleft()
                    continue
                if check_stp and maker.account == account:
                    if stp is _EXPIRE_TAKER:
                        taker.leaves = remaining
                        self._drop_empty(opposite, level)
                        return steps, True
                    orders.popleft()
                    level.qty -= leaves
                    level.count -= 1
                    steps.append((maker, 0))
                    if stp is _EXPIRE_BOTH:
                        taker.leaves = remaining
                        self._drop_empty(opposite, level)
                        return steps, True
                    continue
                qty = remaining if remaining < leaves else leaves
                remaining -= qty
                maker.leaves = leaves - qty
                maker.filled += qty
                maker.notional_filled += qty * price
                level.qty -= qty
                if qty == leaves:
                    orders.popleft()
                    level.count -= 1
                steps.append((maker, qty))
            if not level.count:
                del levels[price]
                prices.pop(best)  # the level just emptied is the best one: no search, unlike remove(price)
        taker.leaves = remaining
        return steps, False

    @staticmethod
    def _drop_empty(side: BookSide, level: PriceLevel) -> None:
        if not level.count:
            del side.levels[level.price]
            side.prices.remove(level.price)

    def depth(self, side: Side, levels: int | None = None) -> list[tuple[int, int]]:
        """(price, quantity) of the best `levels` levels of one side, best first."""
        out = []
        for level in self.side_of(side).by_priority():
            if levels is not None and len(out) >= levels:
                break
            out.append((level.price, level.qty))
        return out

    def resting(self) -> Iterator[Order]:
        """Every live resting order, bids then asks, each by priority."""
        for side in (self.bids, self.asks):
            for level in side.by_priority():
                yield from level.live()
