"""The seeds' trader who holds a losing isolated position and keeps adding margin."""

from __future__ import annotations

from exchange.commands import AdjustIsolatedMargin, Command, PlaceOrder
from exchange.enums import OrderType, Side
from exchange.traders.base import OPEN_ATTEMPTS, MarketView, SeededTrader


class HoldAndHope(SeededTrader):
    """Opens an isolated leveraged position once; each time the mark comes within `trigger_ppm` of its
    liquidation price, adds `add_amount` atoms of margin while the wallet allows (seed 000)."""

    def __init__(self, account: int, symbol: str, seed: int, qty: int, add_amount: int,
                 long: bool = True, trigger_ppm: int = 30_000) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.add_amount = add_amount
        self.long = long
        self.trigger = trigger_ppm
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
            self.retired = True  # liquidated or closed: it holds and hopes no more
            return []
        lp = view.liquidation_price(self.account, self.symbol)
        mark = view.mark(self.symbol)
        if not lp or not mark:
            return []
        near = abs(mark - lp) * 1_000_000 <= self.trigger * mark
        if near and self.add_amount and view.available(self.account) >= self.add_amount:
            return [AdjustIsolatedMargin(account=self.account, symbol=self.symbol, amount=self.add_amount)]
        return []
