"""Instruments: what can be traded and the grid its prices and quantities live on.

An instrument is configuration given as decimal strings (as Binance's
`exchangeInfo` filters are); everything the core needs is derived once, as
integers, when the instrument is built.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from exchange.enums import RejectReason
from exchange.units import from_units, to_units

#: The settlement asset's atom: 1e-8 USDT, the precision Binance reports balances in.
USDT_ATOM = Decimal("0.00000001")


class Instrument(msgspec.Struct, kw_only=True):
    """A linear perpetual: quantity in base units (contract size 1), settled in `settlement_asset`.

    Limits follow Binance's filters: PRICE_FILTER (min/max price, tick),
    LOT_SIZE and MARKET_LOT_SIZE (min/max quantity, step), MIN_NOTIONAL and
    PERCENT_PRICE (the price band around the mark price).
    """

    symbol: str
    base_asset: str
    quote_asset: str
    settlement_asset: str
    tick_size: str
    step_size: str
    min_price: str
    max_price: str
    min_qty: str
    max_qty: str
    max_market_qty: str
    min_notional: str
    band_up: str = "0.05"  # PERCENT_PRICE multiplierUp - 1: a buy may not be priced above mark × 1.05
    band_down: str = "0.05"  # 1 - multiplierDown: a sell may not be priced below mark × 0.95
    max_open_orders: int = 200  # MAX_NUM_ORDERS per account; 0 = no limit
    clearance_fee: str = "0.01"  # liquidation clearance fee rate, to the insurance fund (mechanics.md step 4)
    atom: str = str(USDT_ATOM)

    # Derived integers, filled in by __post_init__.
    tick: Decimal = Decimal(0)
    lot: Decimal = Decimal(0)
    money_atom: Decimal = Decimal(0)
    atoms_per_tick_lot: int = 0  # notional of 1 lot at a price of 1 tick, in atoms
    min_price_ticks: int = 0
    max_price_ticks: int = 0
    min_qty_lots: int = 0
    max_qty_lots: int = 0
    max_market_qty_lots: int = 0
    min_notional_atoms: int = 0
    band_up_num: int = 0  # band as a fraction num / BAND_DEN
    band_down_num: int = 0
    clearance_fee_ppm: int = 0

    def __post_init__(self) -> None:
        self.tick = Decimal(self.tick_size)
        self.lot = Decimal(self.step_size)
        self.money_atom = Decimal(self.atom)
        per = self.tick * self.lot / self.money_atom
        if per != per.to_integral_value() or per <= 0:
            raise ValueError(f"{self.symbol}: tick × step must be a whole number of atoms")
        self.atoms_per_tick_lot = int(per)
        self.min_price_ticks = self.price_ticks(self.min_price)
        self.max_price_ticks = self.price_ticks(self.max_price)
        self.min_qty_lots = self.qty_lots(self.min_qty)
        self.max_qty_lots = self.qty_lots(self.max_qty)
        self.max_market_qty_lots = self.qty_lots(self.max_market_qty)
        self.min_notional_atoms = self.money_atoms(self.min_notional)
        self.band_up_num = int(Decimal(self.band_up) * BAND_DEN)
        self.band_down_num = int(Decimal(self.band_down) * BAND_DEN)
        self.clearance_fee_ppm = int(Decimal(self.clearance_fee) * 1_000_000)

    # Edges: decimal strings <-> integers. Off-grid values raise GridError.
    def price_ticks(self, value: str | int | Decimal) -> int:
        return to_units(value, self.tick, f"{self.symbol} price", RejectReason.PRICE_OFF_TICK)

    def qty_lots(self, value: str | int | Decimal) -> int:
        return to_units(value, self.lot, f"{self.symbol} quantity", RejectReason.QTY_OFF_STEP)

    def money_atoms(self, value: str | int | Decimal) -> int:
        return to_units(value, self.money_atom, f"{self.settlement_asset} amount", RejectReason.BAD_PRECISION)

    def price_str(self, ticks: int) -> str:
        return from_units(ticks, self.tick)

    def qty_str(self, lots: int) -> str:
        return from_units(lots, self.lot)

    def money_str(self, atoms: int) -> str:
        return from_units(atoms, self.money_atom)

    def notional_atoms(self, price_ticks: int, qty_lots: int) -> int:
        """price × quantity in atoms: exact, since tick × lot is a whole number of atoms."""
        return price_ticks * qty_lots * self.atoms_per_tick_lot


#: Price bands are fractions with this denominator (1e-6 resolution).
BAND_DEN = 1_000_000


def btcusdt() -> Instrument:
    """BTCUSDT as in mechanics.md Part 1 (tick 0.10, step 0.001, min notional 100) and binance-api.md §4.3.1."""
    return Instrument(
        symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", settlement_asset="USDT",
        tick_size="0.10", step_size="0.001", min_price="556.80", max_price="4529764",
        min_qty="0.001", max_qty="1000", max_market_qty="120", min_notional="100",
    )


def ethusdt() -> Instrument:
    """ETHUSDT as in mechanics.md Part 1 (tick 0.01, step 0.001, min notional 20)."""
    return Instrument(
        symbol="ETHUSDT", base_asset="ETH", quote_asset="USDT", settlement_asset="USDT",
        tick_size="0.01", step_size="0.001", min_price="39.86", max_price="306177",
        min_qty="0.001", max_qty="10000", max_market_qty="2000", min_notional="20",
    )


def default_instruments() -> list[Instrument]:
    return [btcusdt(), ethusdt()]
