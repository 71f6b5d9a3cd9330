"""Noise takers: market orders of random side and size at random times."""

from __future__ import annotations

from exchange.commands import Command, PlaceOrder
from exchange.enums import OrderType, Side
from exchange.traders.base import MarketView, SeededTrader


class NoiseTaker(SeededTrader):
    """With probability `rate_ppm` / 1e6 per step, a market order of `max_qty`/2..`max_qty` lots.

    It leans into its position's opposite side when its inventory exceeds
    `max_inventory`, so it does not drift without bound."""

    def __init__(self, account: int, symbol: str, seed: int, max_qty: int, rate_ppm: int = 200_000,
                 max_inventory: int = 0) -> None:
        super().__init__(account, symbol, seed)
        self.max_qty = max_qty
        self.rate_ppm = rate_ppm
        self.max_inventory = max_inventory

    def step(self, view: MarketView) -> list[Command]:
        if self.rng.randrange(1_000_000) >= self.rate_ppm:
            return []
        inv = view.position(self.account, self.symbol)
        side = Side.BUY if self.rng.randrange(2) else Side.SELL
        if self.max_inventory and abs(inv) >= self.max_inventory:
            side = Side.SELL if inv > 0 else Side.BUY
        qty = self.rng.randint(max(1, self.max_qty // 2), self.max_qty)
        return [PlaceOrder(account=self.account, symbol=self.symbol, side=side, qty=qty,
                           order_type=OrderType.MARKET)]
