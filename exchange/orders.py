"""The order as the engine keeps it while it lives."""

from __future__ import annotations

import msgspec

from exchange.enums import OrderStatus, OrderType, PositionSide, SelfTradePrevention, Side, TimeInForce


class Order(msgspec.Struct, gc=False):
    """A live or finished order. Prices in ticks, quantities in lots.

    Invariant: `filled + leaves + canceled == qty`. `qty` is the ordered
    quantity as last amended. An order object whose `leaves` is 0 is dead: the
    book skips it (an amend that loses priority replaces the object).
    """

    order_id: int
    account: int
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int  # 0 for a market order
    qty: int
    leaves: int
    filled: int = 0
    canceled: int = 0
    client_order_id: str = ""
    reduce_only: bool = False
    stp: SelfTradePrevention = SelfTradePrevention.EXPIRE_TAKER
    status: OrderStatus = OrderStatus.NEW
    ts: int = 0  # virtual time of acceptance (or of the last priority-losing amend)
    notional_filled: int = 0  # Σ price × qty of fills, in tick·lots (average price = this / filled)
    position_side: PositionSide = PositionSide.BOTH
    good_till_date: int = 0  # GTD: virtual ms at which the remainder expires; 0 otherwise
