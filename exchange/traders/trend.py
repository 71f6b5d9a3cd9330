"""Leveraged trend followers, with a stop loss or without."""

from __future__ import annotations

from collections import deque

from exchange.commands import Command, PlaceOrder, PlaceStopOrder
from exchange.conditional import StopType, WorkingType
from exchange.enums import OrderType, Side
from exchange.traders.base import MarketView, SeededTrader


class TrendFollower(SeededTrader):
    """Opens a position in the direction of the index's move over `lookback` steps (at its account's leverage).

    With `stop_loss_ppm`, it places a close-position STOP_MARKET on the mark that
    far from entry; without, it holds until liquidated or until the trend
    turns (then it closes and may re-enter).
    """

    def __init__(self, account: int, symbol: str, seed: int, qty: int, lookback: int = 30,
                 threshold_ppm: int = 2_000, stop_loss_ppm: int = 0) -> None:
        super().__init__(account, symbol, seed)
        self.qty = qty
        self.lookback = lookback
        self.threshold = threshold_ppm
        self.stop_loss = stop_loss_ppm
        self.history: deque[int] = deque(maxlen=lookback)
        self.patience = self.rng.randint(0, lookback)


    def step(self, view: MarketView) -> list[Command]:
        price = view.index(self.symbol)
        if not price:
            return []
        self.history.append(price)
        if self.patience:
            self.patience -= 1
            return []
        if len(self.history) < self.lookback:
            return []
        move = (price - self.history[0]) * 1_000_000 // self.history[0]
        pos = view.position(self.account, self.symbol)
        want = 1 if move > self.threshold else -1 if move < -self.threshold else 0
        if not want or ((pos > 0) == (want > 0) and pos):
            return []
        cmds: list[Command] = []
        side = Side.BUY if want > 0 else Side.SELL
        qty = self.qty + (abs(pos) if pos else 0)  # flip: close and open
        cmds.append(PlaceOrder(account=self.account, symbol=self.symbol, side=side, qty=qty,
                               order_type=OrderType.MARKET))
        if self.stop_loss:
            stop_side = Side.SELL if want > 0 else Side.BUY
            mark = view.mark(self.symbol) or price
            trigger = mark * (1_000_000 - self.stop_loss) // 1_000_000 if want > 0 else \
                mark * (1_000_000 + self.stop_loss) // 1_000_000
            cmds.append(PlaceStopOrder(account=self.account, symbol=self.symbol, side=stop_side,
                                       stop_type=StopType.STOP_MARKET, trigger_price=trigger, close_position=True,
                                       working_type=WorkingType.MARK_PRICE))
        self.patience = self.lookback
        return cmds
