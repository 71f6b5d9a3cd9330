"""Simulated traders: small strategies over the same commands a bot would send.

Each trader is deterministic given its seed: it keeps its own
`random.Random`, reads the market through a `MarketView`, and returns the
commands it wants applied this step. None of them touches the engine's state
directly.
"""

from exchange.traders.base import MarketView, Trader
from exchange.traders.hold_and_hope import HoldAndHope
from exchange.traders.market_maker import MarketMaker
from exchange.traders.noise import NoiseTaker
from exchange.traders.partial_closer import PartialCloser
from exchange.traders.trend import TrendFollower

__all__ = ["HoldAndHope", "MarketMaker", "MarketView", "NoiseTaker", "PartialCloser", "Trader", "TrendFollower"]
