"""A Binance USDⓈ-M style perpetual-futures exchange emulator: the domain model and the engine core."""

from exchange.engine import Engine

__all__ = ["Engine"]
