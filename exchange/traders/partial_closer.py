"""The seeds' alternative: close part of a losing position instead of adding margin."""

from __future__ import annotations

from exchange.commands import Command, PlaceOrder, SetLeverage
from exchange.enums import OrderType, Side
from exchange.traders.base import MarketView, SeededTrader


class PartialCloser(SeededTrader):
    """Opens a cross leveraged position once; each time the mark comes within `trigger_ppm` of its
    liquidation price, closes `close_ppm` of what is left with a reduce-only market order."""

    def __init__(self, account: int, symbol: str, seed: int, qty: int, leverage: int, long: bool = True,
                 trigger_ppm: int = 30_000, close_ppm: int = 500_000) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.leverage = leverage
        self.long = long
        self.trigger = trigger_ppm
        self.close = close_ppm
        self.opened = False

    def setup(self, view: MarketView) -> list[Command]:
        return [SetLeverage(account=self.account, symbol=self.symbol, leverage=self.leverage)]

    def step(self, view: MarketView) -> list[Command]:
        pos = view.position(self.account, self.symbol)
        if not self.opened:
            self.opened = True
            return [PlaceOrder(account=self.account, symbol=self.symbol, side=Side.BUY if self.long else Side.SELL,
                               qty=self.qty, order_type=OrderType.MARKET)]
        lp = view.liquidation_price(self.account, self.symbol)
        mark = view.mark(self.symbol)
        if not pos or not lp or not mark:
            return []
        if abs(mark - lp) * 1_000_000 <= self.trigger * mark:
            qty = max(1, abs(pos) * self.close // 1_000_000)
            return [PlaceOrder(account=self.account, symbol=self.symbol, side=Side.SELL if pos > 0 else Side.BUY,
                               qty=qty, order_type=OrderType.MARKET, reduce_only=True)]
        return []
