"""The order-entry rules (Binance's filters), as one function from an order to a reject reason.

Pure: it reads the instrument, the command and the reference prices, and
returns the first rule broken, or None. The engine calls it before it changes
anything, so a rejected command leaves no trace but its reject event.
"""

from __future__ import annotations

import re

from exchange.commands import AmendOrder, PlaceOrder
from exchange.enums import OrderType, PositionSide, RejectReason, SelfTradePrevention, Side, TimeInForce
from exchange.instrument import BAND_DEN, Instrument

_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_BUY = Side.BUY
_SELL = Side.SELL
_GTC = TimeInForce.GTC
_EXPIRE_TAKER = SelfTradePrevention.EXPIRE_TAKER
_BOTH = PositionSide.BOTH
_LONG = PositionSide.LONG


def check_client_order_id(client_order_id: str) -> RejectReason | None:
    """Binance's newClientOrderId rule: 1-36 of `.A-Z:/a-z0-9_-` (empty: none given; not a str: invalid)."""
    if type(client_order_id) is not str or (client_order_id and not _CLIENT_ID.fullmatch(client_order_id)):
        return RejectReason.INVALID_CLIENT_ORDER_ID
    return None


def check_limit_price(ins: Instrument, side: Side, price: int, mark: int) -> RejectReason | None:
    """PRICE_FILTER bounds and the PERCENT_PRICE band around the mark (skipped while no mark is known)."""
    if type(price) is not int:
        return RejectReason.MALFORMED
    if price <= 0:
        return RejectReason.PRICE_REQUIRED
    if price < ins.min_price_ticks:
        return RejectReason.PRICE_BELOW_MIN
    if price > ins.max_price_ticks and ins.max_price_ticks:  # a zero maxPrice disables the rule (§4.3.1)
        return RejectReason.PRICE_ABOVE_MAX
    if mark:
        # buy: price ≤ mark × (1 + up); sell: price ≥ mark × (1 − down); exact in integers
        if side is _BUY and price * BAND_DEN > mark * (BAND_DEN + ins.band_up_num):
            return RejectReason.PRICE_ABOVE_BAND
        if side is _SELL and price * BAND_DEN < mark * (BAND_DEN - ins.band_down_num):
            return RejectReason.PRICE_BELOW_BAND
    return None


def is_closing(reduce_only: bool, position_side: PositionSide, side: Side) -> bool:
    """A closing order: reduce-only by its flag (one-way mode) or by its side (hedge mode: selling the LONG side,
    buying the SHORT side); it may only reduce a position and is exempt from MIN_NOTIONAL."""
    return reduce_only or (position_side is not _BOTH and (position_side is _LONG) != (side is _BUY))


def market_band_limit(ins: Instrument, side: Side, mark: int) -> int:
    """The furthest price a MARKET order may trade at: the PERCENT_PRICE band around the mark (binance-api.md
    §4.3.1), the same bound a limit price must keep: a buy up to floor(mark × (1 + up)), a sell down to
    ceil(mark × (1 − down)). A market order that would have to trade past it, its counterparty's best price
    already outside or its sweep reaching past it, is refused (-4131: "For market orders that would sweep
    past the band")."""
    if side is _BUY:
        return mark * (BAND_DEN + ins.band_up_num) // BAND_DEN
    return -((-mark * (BAND_DEN - ins.band_down_num)) // BAND_DEN)


def check_qty(ins: Instrument, qty: int, max_lots: int) -> RejectReason | None:
    """LOT_SIZE / MARKET_LOT_SIZE bounds."""
    if type(qty) is not int:
        return RejectReason.MALFORMED
    if qty <= 0:
        return RejectReason.QTY_NOT_POSITIVE
    if qty < ins.min_qty_lots:
        return RejectReason.QTY_BELOW_MIN
    if qty > max_lots:
        return RejectReason.QTY_ABOVE_MAX
    return None


def check_order(ins: Instrument, cmd: PlaceOrder, mark: int, reference: int) -> RejectReason | None:
    """The first order-entry rule `cmd` breaks, or None.

    `mark` is the mark price (0: unknown); `reference` values a market order
    for MIN_NOTIONAL: the mark, else the last trade, else 0 (no check).

    The rules, in the order they are applied: fields of the wrong type
    (MALFORMED; a plain str where an enum belongs included), the side, the
    order type and time in force, LOT_SIZE (`check_qty`), PRICE_FILTER and
    PERCENT_PRICE (`check_limit_price`; a market order must carry no price),
    MIN_NOTIONAL, the client order id. Every order placed runs through here, so
    the common case is tested first and cheaply: an identity test for the
    default value before the type test (`stp is EXPIRE_TAKER`), and one
    chained comparison for a quantity or price in range; only a value that
    fails it goes to the rule's own function (`check_qty`, ...), which says
    which limit it breaks. The reason returned is the same either way.
    """
    reduce_only = cmd.reduce_only
    stp = cmd.stp
    pside = cmd.position_side
    if (type(cmd.account) is not int or (reduce_only is not False and reduce_only is not True)  # i.e. not a bool
            or (stp is not _EXPIRE_TAKER and type(stp) is not SelfTradePrevention)
            or (pside is not _BOTH and type(pside) is not PositionSide)):
        return RejectReason.MALFORMED
    side = cmd.side
    if side is not _BUY and side is not _SELL:
        return RejectReason.INVALID_SIDE
    otype = cmd.order_type
    qty = cmd.qty
    price = cmd.price
    if otype is _LIMIT:
        tif = cmd.tif
        if tif is not _GTC and type(tif) is not TimeInForce:  # a plain "GTC" str would pass `in` but fail every `is`
            return RejectReason.INVALID_TIME_IN_FORCE
        if not (type(qty) is int and qty > 0 and ins.min_qty_lots <= qty <= ins.max_qty_lots):
            reason = check_qty(ins, qty, ins.max_qty_lots)
            if reason is not None:
                return reason
        if mark or not (type(price) is int and price > 0 and ins.min_price_ticks <= price <= ins.max_price_ticks):
            reason = check_limit_price(ins, side, price, mark)
            if reason is not None:
                return reason
        notional_price = price
    elif otype is _MARKET:
        if type(price) is not int:
            return RejectReason.MALFORMED
        if price:
            return RejectReason.PRICE_NOT_ALLOWED
        if not (type(qty) is int and qty > 0 and ins.min_qty_lots <= qty <= ins.max_market_qty_lots):
            reason = check_qty(ins, qty, ins.max_market_qty_lots)
            if reason is not None:
                return reason
        notional_price = reference
    else:
        return RejectReason.INVALID_ORDER_TYPE
    # MIN_NOTIONAL: price × qty ≥ min notional, unless a closing order (`is_closing`: in hedge mode by its side,
    # or a dust position could not be closed at all, the reduce-only flag being refused there)
    if (notional_price and notional_price * qty * ins.atoms_per_tick_lot < ins.min_notional_atoms
            and not is_closing(reduce_only, pside, side)):
        return RejectReason.MIN_NOTIONAL
    client_order_id = cmd.client_order_id
    if client_order_id or type(client_order_id) is not str:  # "" (none given) is the one value with nothing to check
        return check_client_order_id(client_order_id)
    return None


def check_amend(ins: Instrument, side: Side, cmd: AmendOrder, mark: int, reduce_only: bool) -> RejectReason | None:
    """The rules a new price and quantity must meet, as for a new limit order."""
    reason = check_qty(ins, cmd.qty, ins.max_qty_lots) or check_limit_price(ins, side, cmd.price, mark)
    if reason is not None:
        return reason
    if not reduce_only and cmd.price * cmd.qty * ins.atoms_per_tick_lot < ins.min_notional_atoms:
        return RejectReason.MIN_NOTIONAL
    return None
