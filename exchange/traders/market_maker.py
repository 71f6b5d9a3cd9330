"""A market maker quoting both sides around the index, skewed against its inventory."""

from __future__ import annotations

from exchange.commands import CancelAll, Command, PlaceOrder
from exchange.enums import Side, TimeInForce
from exchange.traders.base import MarketView, SeededTrader


class MarketMaker(SeededTrader):
    """Each step: cancel, then quote `levels` bids and asks `spread_ticks` apart around index − skew.

    Skew: `skew_ticks_per_lot` × inventory moves both quotes down when long (it
    wants to sell) and up when short. Quotes are post-only, so the maker never
    takes; a quote that would cross is simply rejected.
    """

    def __init__(self, account: int, symbol: str, seed: int, qty: int, levels: int = 5, spread_ticks: int = 10,
                 step_ticks: int = 10, skew_ticks_per_lot: int = 0, max_inventory: int = 0) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.levels = levels
        self.spread = spread_ticks
        self.step_ticks = step_ticks
        self.skew = skew_ticks_per_lot
        self.max_inventory = max_inventory

    def step(self, view: MarketView) -> list[Command]:
        center = view.index(self.symbol)
        if not center:
            return []
        inv = view.position(self.account, self.symbol)
        center -= inv * self.skew
        cmds: list[Command] = [CancelAll(account=self.account, symbol=self.symbol)]
        half = max(1, self.spread // 2)
        for i in range(self.levels):
            size = self.qty + self.rng.randrange(self.qty + 1)
            if not self.max_inventory or inv < self.max_inventory:
                cmds.append(PlaceOrder(account=self.account, symbol=self.symbol, side=Side.BUY, qty=size,
                                       price=center - half - i * self.step_ticks, tif=TimeInForce.GTX))
            if not self.max_inventory or inv > -self.max_inventory:
                cmds.append(PlaceOrder(account=self.account, symbol=self.symbol, side=Side.SELL, qty=size,
                                       price=center + half + i * self.step_ticks, tif=TimeInForce.GTX))
        return cmds
