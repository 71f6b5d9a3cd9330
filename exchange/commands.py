"""Commands: everything that can change the engine's state, as data.

A command is what a gateway, a scenario or a clock feeds the engine. It is a
msgspec Struct in a tagged union (tag field `type`), so a journal of commands
is enough to replay a run. Prices are ticks, quantities lots, money atoms.
"""

from __future__ import annotations

from typing import Union

import msgspec

from exchange.conditional import StopType, WorkingType
from exchange.enums import (
    MarginMode,
    OrderType,
    PositionMode,
    PositionSide,
    SelfTradePrevention,
    Side,
    TimeInForce,
    WalletKind,
)


class Command(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Base of every command."""


class PlaceOrder(Command, tag=True):
    account: int
    symbol: str
    side: Side
    qty: int
    price: int = 0  # ticks; required for LIMIT, 0 for MARKET
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    client_order_id: str = ""
    reduce_only: bool = False
    stp: SelfTradePrevention = SelfTradePrevention.EXPIRE_TAKER
    position_side: PositionSide = PositionSide.BOTH  # LONG or SHORT in hedge mode
    good_till_date: int = 0  # GTD only: virtual ms at which the remainder expires (after now); ignored otherwise


class PlaceStopOrder(Command, tag=True):
    """A conditional order (Binance algo order): placed in the book when its trigger is reached.

    STOP/TAKE_PROFIT need `price` (the limit); *_MARKET send a market order.
    `close_position` closes the whole position at trigger (qty ignored).
    A trailing stop uses `callback_ppm` (1_000 = 0.1% .. 100_000 = 10%) and
    an optional `activation_price`.
    """

    account: int
    symbol: str
    side: Side
    stop_type: StopType
    trigger_price: int = 0  # ticks; not used by a trailing stop
    qty: int = 0
    price: int = 0
    working_type: WorkingType = WorkingType.CONTRACT_PRICE
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    close_position: bool = False
    position_side: PositionSide = PositionSide.BOTH
    client_order_id: str = ""
    callback_ppm: int = 0
    activation_price: int = 0


class CancelStopOrder(Command, tag=True):
    account: int
    symbol: str
    stop_id: int = 0
    client_order_id: str = ""


class CancelOrder(Command, tag=True):
    """Cancel one order, by engine order id or by the account's client order id."""

    account: int
    symbol: str
    order_id: int = 0
    client_order_id: str = ""


class CancelAll(Command, tag=True):
    """Cancel every open order of `account` on `symbol`."""

    account: int
    symbol: str


class AmendOrder(Command, tag=True):
    """Change a resting limit order's price and/or quantity (Binance `PUT /fapi/v1/order`).

    Lowering the quantity at the same price keeps time priority; a price
    change or a larger quantity loses it (the order goes to the back).
    """

    account: int
    symbol: str
    qty: int
    price: int
    order_id: int = 0
    client_order_id: str = ""


class SetMarkPrice(Command, tag=True):
    """Set a symbol's mark price directly (until the market-data model computes it)."""

    symbol: str
    price: int


class UpdateIndex(Command, tag=True):
    """New prices of a symbol's index sources: (venue, weight, price in ticks or None when the source is down)."""

    symbol: str
    sources: list[tuple[str, int, int | None]]


class AdvanceClock(Command, tag=True):
    """Move virtual time forward to `ts` (milliseconds); never backward."""

    ts: int


class Deposit(Command, tag=True):
    """Money from outside into an account's wallet (the account is created on its first deposit)."""

    account: int
    asset: str
    amount: int  # atoms
    wallet: WalletKind = WalletKind.FUTURES


class Withdraw(Command, tag=True):
    """Money out of the exchange, from the futures wallet up to the free margin, or from spot."""

    account: int
    asset: str
    amount: int
    wallet: WalletKind = WalletKind.FUTURES


class Transfer(Command, tag=True):
    """Move money between an account's spot and futures wallets."""

    account: int
    asset: str
    amount: int
    from_wallet: WalletKind
    to_wallet: WalletKind


class SetLeverage(Command, tag=True):
    account: int
    symbol: str
    leverage: int


class SetMarginMode(Command, tag=True):
    account: int
    symbol: str
    margin_mode: MarginMode


class SetPositionMode(Command, tag=True):
    """One-way or hedge; only while the account holds no position and no open order."""

    account: int
    position_mode: PositionMode


class AdjustIsolatedMargin(Command, tag=True):
    """Add (amount > 0) or remove (amount < 0) isolated margin by hand."""

    account: int
    symbol: str
    amount: int
    position_side: PositionSide = PositionSide.BOTH


class SetAutoMarginAddition(Command, tag=True):
    """Switch auto margin addition on or off for one isolated position."""

    account: int
    symbol: str
    enabled: bool
    position_side: PositionSide = PositionSide.BOTH


class SetFeeTier(Command, tag=True):
    """An account's maker and taker fee rates, in ppm of the notional (0.02% = 200)."""

    account: int
    maker_fee_ppm: int
    taker_fee_ppm: int


AnyCommand = Union[
    PlaceOrder, CancelOrder, CancelAll, AmendOrder, SetMarkPrice, AdvanceClock, UpdateIndex,
    Deposit, Withdraw, Transfer, SetLeverage, SetMarginMode, SetPositionMode, AdjustIsolatedMargin,
    SetAutoMarginAddition, SetFeeTier, PlaceStopOrder, CancelStopOrder,
]
