"""What a simulated trader sees and what it is."""

from __future__ import annotations

import random
from typing import Protocol

from exchange.commands import Command
from exchange.engine import Engine
from exchange.enums import PositionSide, Side


class MarketView:
    """A read-only window on the engine, the public data a bot would have plus its own account."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def now(self) -> int:
        return self.engine.clock.now

    def mark(self, symbol: str) -> int:
        m = self.engine.markets[symbol]
        return m.mark_price or m.last_price

    def index(self, symbol: str) -> int:
        m = self.engine.markets[symbol]
        return (m.data.index_price if m.data is not None else 0) or self.mark(symbol)

    def best(self, symbol: str, side: Side) -> int | None:
        book = self.engine.markets[symbol].book
        return book.best_bid() if side is Side.BUY else book.best_ask()

    def position(self, account: int, symbol: str, side: PositionSide = PositionSide.BOTH) -> int:
        c = self.engine.clearing
        acct = c.accounts.get(account) if c is not None else None
        pos = acct.positions.get((symbol, side)) if acct is not None else None
        return pos.qty if pos is not None else 0

    def isolated_margin(self, account: int, symbol: str, side: PositionSide = PositionSide.BOTH) -> int:
        c = self.engine.clearing
        acct = c.accounts.get(account) if c is not None else None
        pos = acct.positions.get((symbol, side)) if acct is not None else None
        return pos.isolated_margin if pos is not None else 0

    def liquidation_price(self, account: int, symbol: str, side: PositionSide = PositionSide.BOTH) -> int:
        c = self.engine.clearing
        acct = c.accounts.get(account) if c is not None else None
        pos = acct.positions.get((symbol, side)) if acct is not None else None
        return pos.liq_ticks if pos is not None else 0

    def available(self, account: int, asset: str = "USDT") -> int:
        c = self.engine.clearing
        acct = c.accounts.get(account) if c is not None else None
        return c.max_withdrawable(acct, asset) if c is not None and acct is not None else 0

    def open_orders(self, account: int, symbol: str) -> int:
        return len(self.engine.markets[symbol].open_by_account.get(account, ()))


#: Steps a trader keeps trying to open its position before it gives up.
OPEN_ATTEMPTS = 30


class Trader(Protocol):
    """A simulated trader: its account, and the commands it sends at each step."""

    account: int
    retired: bool  # a trader with nothing left to do (e.g. liquidated) is no longer scheduled

    def step(self, view: MarketView) -> list[Command]:
        """Commands for this step of virtual time."""
        ...


class SeededTrader:
    """Shared plumbing: account, symbol, a private random generator."""

    def __init__(self, account: int, symbol: str, seed: int) -> None:
        self.account = account
        self.symbol = symbol
        self.rng = random.Random(seed * 1_000_003 + account)
        self.retired = False
