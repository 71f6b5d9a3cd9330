"""The seeds' alternative: close part of a losing position instead of adding margin."""

from __future__ import annotations

from exchange.commands import Command, PlaceOrder
from exchange.enums import OrderType, Side
from exchange.traders.base import OPEN_ATTEMPTS, MarketView, SeededTrader


class PartialCloser(SeededTrader):
    """Opens a cross leveraged position once; each time the mark comes within `trigger_ppm` of its
    liquidation price, closes `close_ppm` of what is left with a reduce-only market order."""

    def __init__(self, account: int, symbol: str, seed: int, qty: int, long: bool = True,
                 trigger_ppm: int = 30_000, close_ppm: int = 500_000) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.long = long
        self.trigger = trigger_ppm
        self.close = close_ppm
        self.opened = False
        self.attempts = 0


    def step(self, view: MarketView) -> list[Command]:
        pos = view.position(self.account, self.symbol)
        if not self.opened:
            # buy (or sell) until the whole position is on: a thin book may fill it over several steps;
            # give up after OPEN_ATTEMPTS steps (e.g. it cannot afford it)
            self.attempts += 1
            if abs(pos) >= self.qty or self.attempts > OPEN_ATTEMPTS:
                self.opened = True
            else:
                return [PlaceOrder(account=self.account, symbol=self.symbol,
                                   side=Side.BUY if self.long else Side.SELL, qty=self.qty - abs(pos),
                                   order_type=OrderType.MARKET)]
        if not pos:
            self.retired = True  # liquidated or closed out
            return []
        lp = view.liquidation_price(self.account, self.symbol)
        mark = view.mark(self.symbol)
        if not lp or not mark:
            return []
        if abs(mark - lp) * 1_000_000 <= self.trigger * mark:
            qty = max(1, abs(pos) * self.close // 1_000_000)
            return [PlaceOrder(account=self.account, symbol=self.symbol, side=Side.SELL if pos > 0 else Side.BUY,
                               qty=qty, order_type=OrderType.MARKET, reduce_only=True)]
        return []
