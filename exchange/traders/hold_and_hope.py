"""The seeds' trader who holds a losing isolated position and keeps adding margin."""

from __future__ import annotations

from exchange.commands import AdjustIsolatedMargin, Command, PlaceOrder, SetLeverage, SetMarginMode
from exchange.enums import MarginMode, OrderType, Side
from exchange.traders.base import MarketView, SeededTrader


class HoldAndHope(SeededTrader):
    """Opens an isolated leveraged position once; each time the mark comes within `trigger_ppm` of its
    liquidation price, adds `add_amount` atoms of margin while the wallet allows (seed 000)."""

    def __init__(self, account: int, symbol: str, seed: int, qty: int, leverage: int, add_amount: int,
                 long: bool = True, trigger_ppm: int = 30_000) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.leverage = leverage
        self.add_amount = add_amount
        self.long = long
        self.trigger = trigger_ppm
        self.opened = False

    def setup(self, view: MarketView) -> list[Command]:
        return [SetMarginMode(account=self.account, symbol=self.symbol, margin_mode=MarginMode.ISOLATED),
                SetLeverage(account=self.account, symbol=self.symbol, leverage=self.leverage)]

    def step(self, view: MarketView) -> list[Command]:
        pos = view.position(self.account, self.symbol)
        if not self.opened:
            self.opened = True
            return [PlaceOrder(account=self.account, symbol=self.symbol, side=Side.BUY if self.long else Side.SELL,
                               qty=self.qty, order_type=OrderType.MARKET)]
        if not pos:
            return []
        lp = view.liquidation_price(self.account, self.symbol)
        mark = view.mark(self.symbol)
        if not lp or not mark:
            return []
        near = abs(mark - lp) * 1_000_000 <= self.trigger * mark
        if near and view.available(self.account) >= self.add_amount:
            return [AdjustIsolatedMargin(account=self.account, symbol=self.symbol, amount=self.add_amount)]
        return []
