"""Enumerations shared by commands, events and the book.

Values are the Binance USDⓈ-M spellings, so that an event encodes to the
same words a bot sees on the real venue's REST and WebSocket APIs.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    LIQUIDATION = "LIQUIDATION"  # an IOC the liquidation engine sends at the bankruptcy price (Binance o=LIQUIDATION)


class TimeInForce(StrEnum):
    GTC = "GTC"  # good till cancelled: the remainder rests
    IOC = "IOC"  # immediate or cancel: the remainder expires
    FOK = "FOK"  # fill or kill: all at once or nothing
    GTX = "GTX"  # post only: rejected if any part would take
    GTD = "GTD"  # good till date: as GTC, and the remainder expires at `good_till_date` (virtual ms)


class SelfTradePrevention(StrEnum):
    """What happens when an order would trade with one of its own account's."""

    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"
    NONE = "NONE"


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"  # removed by self-trade prevention


class CancelReason(StrEnum):
    """Why an order left the book (or never rested) with quantity unfilled."""

    USER = "USER"  # cancel or cancel-all command
    IOC_REMAINDER = "IOC_REMAINDER"  # IOC or MARKET found no more liquidity
    SELF_TRADE = "SELF_TRADE"  # self-trade prevention expired it
    REDUCE_ONLY = "REDUCE_ONLY"  # a reduce-only order that could no longer only reduce
    LIQUIDATION = "LIQUIDATION"  # expired by the liquidation engine to free the margin it held (Binance er=5)
    ADL = "ADL"  # cancelled because auto-deleveraging closed the position it was for
    GTD_EXPIRED = "GTD_EXPIRED"  # a GTD order reached its good-till date

    @property
    def status(self) -> OrderStatus:
        return _CANCEL_STATUS[self]


_CANCEL_STATUS = {
    CancelReason.USER: OrderStatus.CANCELED,
    CancelReason.IOC_REMAINDER: OrderStatus.EXPIRED,
    CancelReason.SELF_TRADE: OrderStatus.EXPIRED_IN_MATCH,
    CancelReason.REDUCE_ONLY: OrderStatus.EXPIRED,
    CancelReason.LIQUIDATION: OrderStatus.EXPIRED,  # binance-api.md §3.4 step 2: X=EXPIRED, er=5
    CancelReason.ADL: OrderStatus.CANCELED,
    CancelReason.GTD_EXPIRED: OrderStatus.EXPIRED,
}


class RejectReason(StrEnum):
    """Every reason the engine refuses a command, each with exactly one Binance code (`binance_code`).

    The map is a function, not a bijection: Binance gives one code to several
    causes (-2010 "rejected", -1102 for a missing or malformed parameter, -2027
    for position limits), and the engine keeps those causes apart as reasons so
    a test or a bot can tell them apart; the REST edge reports the shared code.
    """

    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_TIME_IN_FORCE = "INVALID_TIME_IN_FORCE"
    PRICE_REQUIRED = "PRICE_REQUIRED"
    PRICE_NOT_ALLOWED = "PRICE_NOT_ALLOWED"
    PRICE_OFF_TICK = "PRICE_OFF_TICK"
    PRICE_BELOW_MIN = "PRICE_BELOW_MIN"
    PRICE_ABOVE_MAX = "PRICE_ABOVE_MAX"
    PRICE_ABOVE_BAND = "PRICE_ABOVE_BAND"
    PRICE_BELOW_BAND = "PRICE_BELOW_BAND"
    COUNTERPARTY_PRICE_OUTSIDE_BAND = "COUNTERPARTY_PRICE_OUTSIDE_BAND"  # a MARKET order that would pass the band
    GOOD_TILL_DATE_INVALID = "GOOD_TILL_DATE_INVALID"  # GTD without a good-till date in the future
    BAD_PRECISION = "BAD_PRECISION"
    QTY_NOT_POSITIVE = "QTY_NOT_POSITIVE"
    QTY_OFF_STEP = "QTY_OFF_STEP"
    QTY_BELOW_MIN = "QTY_BELOW_MIN"
    QTY_ABOVE_MAX = "QTY_ABOVE_MAX"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    INVALID_CLIENT_ORDER_ID = "INVALID_CLIENT_ORDER_ID"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    FOK_CANNOT_FILL = "FOK_CANNOT_FILL"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    AMEND_NOT_ALLOWED = "AMEND_NOT_ALLOWED"
    AMEND_QTY_BELOW_FILLED = "AMEND_QTY_BELOW_FILLED"
    AMEND_NO_CHANGE = "AMEND_NO_CHANGE"
    MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    MALFORMED = "MALFORMED"
    MARGIN_INSUFFICIENT = "MARGIN_INSUFFICIENT"
    REDUCE_ONLY_REJECTED = "REDUCE_ONLY_REJECTED"
    POSITION_SIDE_MISMATCH = "POSITION_SIDE_MISMATCH"
    MAX_POSITION_EXCEEDED = "MAX_POSITION_EXCEEDED"
    INVALID_LEVERAGE = "INVALID_LEVERAGE"
    LEVERAGE_TOO_HIGH_FOR_POSITION = "LEVERAGE_TOO_HIGH_FOR_POSITION"
    LEVERAGE_MARGIN_INSUFFICIENT = "LEVERAGE_MARGIN_INSUFFICIENT"  # lowering leverage: the margin would not cover
    MARGIN_MODE_UNCHANGED = "MARGIN_MODE_UNCHANGED"
    MARGIN_MODE_OPEN_ORDERS = "MARGIN_MODE_OPEN_ORDERS"
    MARGIN_MODE_HAS_POSITION = "MARGIN_MODE_HAS_POSITION"
    POSITION_MODE_UNCHANGED = "POSITION_MODE_UNCHANGED"
    POSITION_MODE_HAS_POSITION = "POSITION_MODE_HAS_POSITION"
    POSITION_MODE_OPEN_ORDERS = "POSITION_MODE_OPEN_ORDERS"
    NOT_ISOLATED = "NOT_ISOLATED"
    NO_POSITION = "NO_POSITION"
    BALANCE_INSUFFICIENT = "BALANCE_INSUFFICIENT"
    ISOLATED_BALANCE_INSUFFICIENT = "ISOLATED_BALANCE_INSUFFICIENT"
    AMOUNT_NOT_POSITIVE = "AMOUNT_NOT_POSITIVE"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    WOULD_IMMEDIATELY_TRIGGER = "WOULD_IMMEDIATELY_TRIGGER"
    INVALID_CALLBACK_RATE = "INVALID_CALLBACK_RATE"
    MAX_STOP_ORDERS = "MAX_STOP_ORDERS"

    @property
    def binance_code(self) -> int:
        """The Binance USDⓈ-M error code (binance-api.md §4.4) for this reason."""
        return BINANCE_CODES[self]


BINANCE_CODES: dict[RejectReason, int] = {
    RejectReason.UNKNOWN_SYMBOL: -1121,
    RejectReason.INVALID_ORDER_TYPE: -1116,
    RejectReason.INVALID_SIDE: -1117,
    RejectReason.INVALID_TIME_IN_FORCE: -1115,
    RejectReason.PRICE_REQUIRED: -1102,
    RejectReason.PRICE_NOT_ALLOWED: -1106,
    RejectReason.PRICE_OFF_TICK: -4014,
    RejectReason.PRICE_BELOW_MIN: -4013,
    RejectReason.PRICE_ABOVE_MAX: -4002,
    RejectReason.PRICE_ABOVE_BAND: -4016,
    RejectReason.PRICE_BELOW_BAND: -4024,
    RejectReason.COUNTERPARTY_PRICE_OUTSIDE_BAND: -4131,
    # §4.4 has no code of its own for a bad goodTillDate: the malformed-parameter one, as for MALFORMED
    RejectReason.GOOD_TILL_DATE_INVALID: -1102,
    RejectReason.BAD_PRECISION: -1111,
    RejectReason.QTY_NOT_POSITIVE: -4003,
    RejectReason.QTY_OFF_STEP: -4023,
    RejectReason.QTY_BELOW_MIN: -4004,
    RejectReason.QTY_ABOVE_MAX: -4005,
    RejectReason.MIN_NOTIONAL: -4164,
    RejectReason.INVALID_CLIENT_ORDER_ID: -4015,
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: -4116,
    RejectReason.POST_ONLY_WOULD_TAKE: -5022,
    RejectReason.FOK_CANNOT_FILL: -5021,
    RejectReason.UNKNOWN_ORDER: -2011,
    RejectReason.AMEND_NOT_ALLOWED: -2010,  # generic NEW_ORDER_REJECTED
    RejectReason.AMEND_QTY_BELOW_FILLED: -2010,  # generic NEW_ORDER_REJECTED
    RejectReason.AMEND_NO_CHANGE: -5027,
    RejectReason.MAX_OPEN_ORDERS: -2025,
    RejectReason.UNKNOWN_ACCOUNT: -2015,
    RejectReason.MALFORMED: -1102,
    RejectReason.MARGIN_INSUFFICIENT: -2019,
    RejectReason.REDUCE_ONLY_REJECTED: -2022,
    RejectReason.POSITION_SIDE_MISMATCH: -4061,
    RejectReason.MAX_POSITION_EXCEEDED: -2027,
    RejectReason.INVALID_LEVERAGE: -4028,
    RejectReason.LEVERAGE_TOO_HIGH_FOR_POSITION: -2027,
    RejectReason.LEVERAGE_MARGIN_INSUFFICIENT: -2028,
    RejectReason.MARGIN_MODE_UNCHANGED: -4046,
    RejectReason.MARGIN_MODE_OPEN_ORDERS: -4047,
    RejectReason.MARGIN_MODE_HAS_POSITION: -4048,
    RejectReason.POSITION_MODE_UNCHANGED: -4059,
    RejectReason.POSITION_MODE_HAS_POSITION: -4068,
    RejectReason.POSITION_MODE_OPEN_ORDERS: -4067,
    RejectReason.NOT_ISOLATED: -4049,
    RejectReason.NO_POSITION: -4054,
    RejectReason.BALANCE_INSUFFICIENT: -4050,
    RejectReason.ISOLATED_BALANCE_INSUFFICIENT: -4051,
    RejectReason.AMOUNT_NOT_POSITIVE: -4055,
    RejectReason.UNKNOWN_ASSET: -1108,
    RejectReason.WOULD_IMMEDIATELY_TRIGGER: -2021,
    RejectReason.INVALID_CALLBACK_RATE: -2007,
    RejectReason.MAX_STOP_ORDERS: -4045,
}


class PositionSide(StrEnum):
    """Binance's positionSide: BOTH in one-way mode, LONG or SHORT in hedge mode."""

    BOTH = "BOTH"
    LONG = "LONG"
    SHORT = "SHORT"


class PositionMode(StrEnum):
    ONE_WAY = "ONE_WAY"
    HEDGE = "HEDGE"


class MarginMode(StrEnum):
    CROSS = "CROSS"
    ISOLATED = "ISOLATED"


class WalletKind(StrEnum):
    FUTURES = "FUTURES"  # the futures (margin) wallet of a settlement asset
    SPOT = "SPOT"  # the spot/funding wallet: deposits and withdrawals go through it


class BalanceReason(StrEnum):
    """Why a wallet balance changed (Binance ACCOUNT_UPDATE `m`, extended)."""

    DEPOSIT = "DEPOSIT"
    WITHDRAW = "WITHDRAW"
    TRANSFER = "TRANSFER"
    MARGIN_TRANSFER = "MARGIN_TRANSFER"  # isolated margin added or removed by hand
    AUTO_MARGIN_ADD = "AUTO_MARGIN_ADD"
    FUNDING_FEE = "FUNDING_FEE"


class PositionReason(StrEnum):
    """Why a position event was published."""

    TRADE = "TRADE"
    MARGIN_TRANSFER = "MARGIN_TRANSFER"
    AUTO_MARGIN_ADD = "AUTO_MARGIN_ADD"
    LEVERAGE = "LEVERAGE"
    RISK = "RISK"  # a cross position's liquidation price moved because the account changed elsewhere
    FUNDING_FEE = "FUNDING_FEE"
    LIQUIDATION = "LIQUIDATION"
    ADL = "ADL"
