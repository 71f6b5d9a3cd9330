"""Accounts, their wallets, per-symbol settings, positions and open-order exposure.

Plain state with no behaviour beyond bookkeeping; the rules that move money
live in `exchange.clearing`. Money in atoms, quantities in lots (signed for
positions: long > 0), `cost` the signed entry notional in atoms.
"""

from __future__ import annotations

from exchange.enums import MarginMode, PositionMode, PositionSide
from exchange.orders import Order

#: Binance's default leverage for a symbol an account has not configured.
DEFAULT_LEVERAGE = 20


class SymbolSettings:
    """An account's leverage and margin mode for one symbol."""

    __slots__ = ("leverage", "margin_mode")

    def __init__(self, leverage: int = DEFAULT_LEVERAGE, margin_mode: MarginMode = MarginMode.CROSS) -> None:
        self.leverage = leverage
        self.margin_mode = margin_mode


class Position:
    """One position: one-way (BOTH) or one leg of a hedge (LONG/SHORT)."""

    __slots__ = (
        "account", "auto_add", "bankruptcy_ticks", "cost", "isolated_margin", "liq_ticks", "position_side", "qty",
        "realized_pnl", "settings", "symbol",
    )

    def __init__(self, account: int, symbol: str, position_side: PositionSide, settings: SymbolSettings) -> None:
        self.account = account
        self.symbol = symbol
        self.position_side = position_side
        self.settings = settings
        self.qty = 0  # signed lots
        self.cost = 0  # signed entry notional, atoms
        self.isolated_margin = 0  # atoms (isolated only)
        self.realized_pnl = 0  # cumulative, atoms
        self.liq_ticks = 0  # liquidation price on the tick grid, rounded toward the mark; 0: none
        self.bankruptcy_ticks = 0
        self.auto_add = False  # auto margin addition (isolated only)

    @property
    def isolated(self) -> bool:
        return self.settings.margin_mode is MarginMode.ISOLATED


class Exposure:
    """An account's open orders in one symbol, summed for the order-margin rule.

    Only orders that can open or increase a position count (`reduce_only`
    orders hold no margin); `reduce_only` keeps those apart so they can be
    trimmed when the position shrinks.
    """

    __slots__ = ("buy_notional", "buy_qty", "reduce_only", "sell_notional", "sell_qty")

    def __init__(self) -> None:
        self.buy_qty = 0
        self.buy_notional = 0  # Σ price × leaves, tick·lots
        self.sell_qty = 0
        self.sell_notional = 0
        self.reduce_only: dict[int, Order] = {}


class Account:
    __slots__ = ("exposure", "id", "maker_fee_ppm", "position_mode", "positions", "settings", "spot", "taker_fee_ppm",
                 "wallet")

    def __init__(self, account_id: int, maker_fee_ppm: int, taker_fee_ppm: int) -> None:
        self.id = account_id
        self.position_mode = PositionMode.ONE_WAY
        self.maker_fee_ppm = maker_fee_ppm
        self.taker_fee_ppm = taker_fee_ppm
        self.wallet: dict[str, int] = {}  # futures (cross) wallet per settlement asset
        self.spot: dict[str, int] = {}  # spot/funding wallet per asset
        self.settings: dict[str, SymbolSettings] = {}
        self.positions: dict[tuple[str, PositionSide], Position] = {}
        self.exposure: dict[tuple[str, PositionSide], Exposure] = {}

    def symbol_settings(self, symbol: str) -> SymbolSettings:
        s = self.settings.get(symbol)
        if s is None:
            s = self.settings[symbol] = SymbolSettings()
        return s

    def position(self, symbol: str, side: PositionSide) -> Position:
        key = (symbol, side)
        p = self.positions.get(key)
        if p is None:
            p = self.positions[key] = Position(self.id, symbol, side, self.symbol_settings(symbol))
        return p

    def exposure_of(self, symbol: str, side: PositionSide) -> Exposure:
        key = (symbol, side)
        e = self.exposure.get(key)
        if e is None:
            e = self.exposure[key] = Exposure()
        return e

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.qty]
