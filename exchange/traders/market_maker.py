"""A market maker quoting both sides around the index, skewed against its inventory."""

from __future__ import annotations

from collections import deque

from exchange.commands import CancelAll, Command, PlaceOrder
from exchange.enums import Side, TimeInForce
from exchange.traders.base import MarketView, SeededTrader


class MarketMaker(SeededTrader):
    """Each step: cancel, then quote `levels` bids and asks `spread_ticks` apart around index − skew.

    Skew: `skew_ticks_per_lot` × inventory moves both quotes down when long (it
    wants to sell) and up when short. Quotes are post-only, so the maker never
    takes; a quote that would cross is simply rejected. With `pull_move_ppm`,
    the maker pulls its quotes while the index has moved more than that over
    the last `pull_lookback` steps (market makers step away in a crash, which is
    what leaves liquidations to the insurance fund and ADL). `premium_ppm`
    centres the quotes that far above (or below) the index: a crowded book.
    """

    def __init__(self, account: int, symbol: str, seed: int, qty: int, levels: int = 5, spread_ticks: int = 10,
                 step_ticks: int = 10, skew_ticks_per_lot: int = 0, max_inventory: int = 0, pull_move_ppm: int = 0,
                 pull_lookback: int = 30, premium_ppm: int = 0) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.levels = levels
        self.spread = spread_ticks
        self.step_ticks = step_ticks
        self.skew = skew_ticks_per_lot
        self.max_inventory = max_inventory
        self.pull_move_ppm = pull_move_ppm
        self.premium_ppm = premium_ppm
        self.recent: deque[int] = deque(maxlen=pull_lookback)

    def step(self, view: MarketView) -> list[Command]:
        center = view.index(self.symbol)
        if not center:
            return []
        self.recent.append(center)
        cmds: list[Command] = [CancelAll(account=self.account, symbol=self.symbol)]
        if self.pull_move_ppm and abs(center - self.recent[0]) * 1_000_000 > self.pull_move_ppm * self.recent[0]:
            return cmds
        inv = view.position(self.account, self.symbol)
        center += center * self.premium_ppm // 1_000_000 - inv * self.skew
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
