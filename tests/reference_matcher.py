"""A deliberately naive reference matcher: the oracle the property test compares the engine with.

Written from the rules, not from the engine's structure: every resting order
of every symbol lives in one plain list; the best maker is found by sorting
the candidates of each match; prices and limits are checked with exact
fractions computed from the instrument's decimal strings, not from the
engine's derived integers. It is slow on purpose and has no lazy deletion,
no per-level totals and no indexes that could drift out of step.

Scope: well-typed commands (the enums are enums, numbers are ints) for LIMIT
and MARKET orders, GTC/IOC/FOK/GTX, the four self-trade-prevention modes,
cancel (by order id or by client order id), cancel-all, amend and a directly
set mark price. It answers each command with a list of plain tuples:

    ("accepted", order_id, side, order_type, tif, price, qty)
    ("rejected", command_name, reason)
    ("trade", price, qty, maker_order_id, taker_order_id, taker_leaves, maker_leaves)
    ("canceled", order_id, cancel_reason, canceled_qty, filled_qty)
    ("amended", order_id, price, qty, leaves, priority_kept)
    ("mark", price)

The rules, as implemented here:

* A command is validated completely before anything changes; a rejected
  command changes nothing. Checks, first failure wins: symbol; for LIMIT the
  quantity (> 0, ≥ min, ≤ max), the price (> 0, ≥ min, ≤ max, inside the
  percent band around the mark while a mark is known); for MARKET no price,
  then the quantity against the market maximum; the minimum notional (LIMIT:
  its price; MARKET: the mark, else the last trade, else no check;
  reduce-only orders are exempt); the client order id's syntax; the client
  order id must not belong to one of the account's open orders (any symbol);
  the account's open orders on the symbol must be below the maximum (LIMIT
  orders only); a GTX order must not cross; a FOK order must be able to fill
  completely now, self-trade prevention included; a MARKET order, while a
  mark is known, must not need a price outside the percent band around the
  mark: what it could fill with no bound must not exceed what it could fill
  inside the band, self-trade prevention included (binance-api.md §4.3.1,
  "market orders that would sweep past the band", -4131).
* Matching walks the opposite side by price, then by the time the order
  (last) went into the book. Trades happen at the maker's price. When the
  maker belongs to the taker's account, the taker's STP mode decides:
  EXPIRE_TAKER stops the taker, EXPIRE_MAKER removes the maker and goes on,
  EXPIRE_BOTH removes the maker and stops the taker, NONE trades.
* What is left of the taker: expired by self-trade prevention, else resting
  for GTC/GTX, else expired as an IOC remainder (MARKET orders are IOC).
* Amend: the new quantity and price obey the LIMIT rules (band by the order's
  side; min notional unless reduce-only); the new quantity must exceed the
  filled quantity; something must change; a GTX order's new price must not
  cross. The same price with a smaller quantity keeps the order's place;
  anything else takes it out and treats it as a new taker at the new price,
  its remainder resting at the back of its level.
* Cancel-all cancels the account's open orders on the symbol in the order in
  which they (last) went into the book.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from exchange.commands import AmendOrder, CancelAll, CancelOrder, PlaceOrder, SetMarkPrice
from exchange.enums import (
    CancelReason,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.instrument import Instrument

_CLIENT_ID_CHARS = re.compile(r"[.A-Za-z0-9:/_-]+")


@dataclass(eq=False)  # identity equality: list.remove must take out this very order
class RefOrder:
    order_id: int
    account: int
    symbol: str
    side: Side
    tif: TimeInForce
    stp: SelfTradePrevention
    client_order_id: str
    reduce_only: bool
    price: int  # ticks
    qty: int  # lots, as last amended
    filled: int = 0
    canceled: int = 0
    arrived: int = 0  # when it (last) went into the book: a counter, larger is later

    @property
    def open_qty(self) -> int:
        return self.qty - self.filled - self.canceled


class RefSymbol:
    """The rules of one instrument as exact fractions, from its decimal strings."""

    def __init__(self, ins: Instrument) -> None:
        tick, step = Fraction(ins.tick_size), Fraction(ins.step_size)
        self.symbol = ins.symbol
        self.tick, self.step = tick, step
        self.min_price = Fraction(ins.min_price) / tick
        self.max_price = Fraction(ins.max_price) / tick
        self.min_qty = Fraction(ins.min_qty) / step
        self.max_qty = Fraction(ins.max_qty) / step
        self.max_market_qty = Fraction(ins.max_market_qty) / step
        self.min_notional = Fraction(ins.min_notional)
        self.band_up = Fraction(ins.band_up)
        self.band_down = Fraction(ins.band_down)
        self.max_open_orders = ins.max_open_orders
        self.mark = 0
        self.last = 0

    def notional(self, price: int, qty: int) -> Fraction:
        return price * self.tick * qty * self.step


class ReferenceMatcher:
    def __init__(self, instruments: list[Instrument]) -> None:
        self.symbols = {ins.symbol: RefSymbol(ins) for ins in instruments}
        self.book: list[RefOrder] = []  # every resting order of every symbol, in no particular order
        self.all_orders: dict[int, RefOrder] = {}  # every order ever accepted, by id
        self.next_id = 1
        self.clock = 0

    # ------------------------------------------------------------ queries
    def resting(self, symbol: str, side: Side) -> list[RefOrder]:
        """The side's resting orders, best price first, then first in."""
        orders = [o for o in self.book if o.symbol == symbol and o.side == side]
        if side == Side.BUY:
            orders.sort(key=lambda o: (-o.price, o.arrived))
        else:
            orders.sort(key=lambda o: (o.price, o.arrived))
        return orders

    def find(self, symbol: str, account: int, order_id: int, client_order_id: str) -> RefOrder | None:
        for o in self.book:
            if order_id:
                hit = o.order_id == order_id
            elif client_order_id:
                hit = o.client_order_id == client_order_id
            else:
                hit = False
            if hit and o.account == account and o.symbol == symbol:
                return o
        return None

    # ------------------------------------------------------------ commands
    def apply(self, cmd: object) -> list[tuple]:
        if isinstance(cmd, PlaceOrder):
            return self.place(cmd)
        if isinstance(cmd, CancelOrder):
            return self.cancel(cmd)
        if isinstance(cmd, CancelAll):
            return self.cancel_all(cmd)
        if isinstance(cmd, AmendOrder):
            return self.amend(cmd)
        if isinstance(cmd, SetMarkPrice):
            return self.set_mark(cmd)
        raise TypeError(f"the reference matcher does not model {type(cmd).__name__}")

    def place(self, cmd: PlaceOrder) -> list[tuple]:
        sym = self.symbols.get(cmd.symbol)
        if sym is None:
            return [("rejected", "PlaceOrder", RejectReason.UNKNOWN_SYMBOL)]
        reason = self._order_problem(sym, cmd)
        if reason is not None:
            return [("rejected", "PlaceOrder", reason)]
        is_market = cmd.order_type == OrderType.MARKET
        order = RefOrder(
            order_id=self.next_id, account=cmd.account, symbol=cmd.symbol, side=cmd.side,
            tif=TimeInForce.IOC if is_market else cmd.tif, stp=cmd.stp, client_order_id=cmd.client_order_id,
            reduce_only=cmd.reduce_only, price=cmd.price, qty=cmd.qty,
        )
        self.next_id += 1
        self.all_orders[order.order_id] = order
        out: list[tuple] = [
            ("accepted", order.order_id, order.side, cmd.order_type, order.tif, order.price, order.qty),
        ]
        self._trade_and_settle(sym, order, self._market_limit(sym, cmd.side) if is_market else order.price, out)
        return out

    @staticmethod
    def _market_limit(sym: RefSymbol, side: Side) -> Fraction | None:
        """How far a MARKET order may trade: the percent band around the mark (no bound without a mark)."""
        if not sym.mark:
            return None
        return sym.mark * (1 + sym.band_up) if side == Side.BUY else sym.mark * (1 - sym.band_down)

    def cancel(self, cmd: CancelOrder) -> list[tuple]:
        if cmd.symbol not in self.symbols:
            return [("rejected", "CancelOrder", RejectReason.UNKNOWN_SYMBOL)]
        order = self.find(cmd.symbol, cmd.account, cmd.order_id, cmd.client_order_id)
        if order is None:
            return [("rejected", "CancelOrder", RejectReason.UNKNOWN_ORDER)]
        out: list[tuple] = []
        self._close(order, CancelReason.USER, out)
        return out

    def cancel_all(self, cmd: CancelAll) -> list[tuple]:
        if cmd.symbol not in self.symbols:
            return [("rejected", "CancelAll", RejectReason.UNKNOWN_SYMBOL)]
        mine = [o for o in self.book if o.account == cmd.account and o.symbol == cmd.symbol]
        mine.sort(key=lambda o: o.arrived)
        out: list[tuple] = []
        for order in mine:
            self._close(order, CancelReason.USER, out)
        return out

    def amend(self, cmd: AmendOrder) -> list[tuple]:
        sym = self.symbols.get(cmd.symbol)
        if sym is None:
            return [("rejected", "AmendOrder", RejectReason.UNKNOWN_SYMBOL)]
        order = self.find(cmd.symbol, cmd.account, cmd.order_id, cmd.client_order_id)
        if order is None:
            return [("rejected", "AmendOrder", RejectReason.UNKNOWN_ORDER)]
        reason = (
            self._qty_problem(sym, cmd.qty, sym.max_qty)
            or self._price_problem(sym, order.side, cmd.price)
            or self._notional_problem(sym, cmd.price, cmd.qty, order.reduce_only)
        )
        if reason is None:
            if cmd.qty <= order.filled:
                reason = RejectReason.AMEND_QTY_BELOW_FILLED
            elif cmd.qty == order.qty and cmd.price == order.price:
                reason = RejectReason.AMEND_NO_CHANGE
            elif (order.tif == TimeInForce.GTX and cmd.price != order.price
                  and self._crosses(sym, order.side, cmd.price)):
                reason = RejectReason.POST_ONLY_WOULD_TAKE
        if reason is not None:
            return [("rejected", "AmendOrder", reason)]
        keeps_place = cmd.price == order.price and cmd.qty < order.qty
        order.qty = cmd.qty
        order.price = cmd.price
        out: list[tuple] = [("amended", order.order_id, order.price, order.qty, order.open_qty, keeps_place)]
        if not keeps_place:
            self.book.remove(order)
            self._trade_and_settle(sym, order, order.price, out)
        return out

    def set_mark(self, cmd: SetMarkPrice) -> list[tuple]:
        sym = self.symbols.get(cmd.symbol)
        if sym is None:
            return [("rejected", "SetMarkPrice", RejectReason.UNKNOWN_SYMBOL)]
        if cmd.price <= 0:
            return [("rejected", "SetMarkPrice", RejectReason.PRICE_REQUIRED)]
        sym.mark = cmd.price
        return [("mark", cmd.price)]

    # ------------------------------------------------------------ rules
    @staticmethod
    def _qty_problem(sym: RefSymbol, qty: int, maximum: Fraction) -> RejectReason | None:
        if qty <= 0:
            return RejectReason.QTY_NOT_POSITIVE
        if qty < sym.min_qty:
            return RejectReason.QTY_BELOW_MIN
        if qty > maximum:
            return RejectReason.QTY_ABOVE_MAX
        return None

    @staticmethod
    def _price_problem(sym: RefSymbol, side: Side, price: int) -> RejectReason | None:
        if price <= 0:
            return RejectReason.PRICE_REQUIRED
        if price < sym.min_price:
            return RejectReason.PRICE_BELOW_MIN
        if price > sym.max_price:
            return RejectReason.PRICE_ABOVE_MAX
        if sym.mark:
            if side == Side.BUY and price > sym.mark * (1 + sym.band_up):
                return RejectReason.PRICE_ABOVE_BAND
            if side == Side.SELL and price < sym.mark * (1 - sym.band_down):
                return RejectReason.PRICE_BELOW_BAND
        return None

    @staticmethod
    def _notional_problem(sym: RefSymbol, price: int, qty: int, reduce_only: bool) -> RejectReason | None:
        if price and not reduce_only and sym.notional(price, qty) < sym.min_notional:
            return RejectReason.MIN_NOTIONAL
        return None

    def _order_problem(self, sym: RefSymbol, cmd: PlaceOrder) -> RejectReason | None:
        if cmd.order_type == OrderType.LIMIT:
            reason = self._qty_problem(sym, cmd.qty, sym.max_qty) or self._price_problem(sym, cmd.side, cmd.price)
            valued_at = cmd.price
        else:
            if cmd.price != 0:
                return RejectReason.PRICE_NOT_ALLOWED
            reason = self._qty_problem(sym, cmd.qty, sym.max_market_qty)
            valued_at = sym.mark or sym.last
        reason = reason or self._notional_problem(sym, valued_at, cmd.qty, cmd.reduce_only)
        if reason is not None:
            return reason
        cid = cmd.client_order_id
        if cid and (len(cid) > 36 or not _CLIENT_ID_CHARS.fullmatch(cid)):
            return RejectReason.INVALID_CLIENT_ORDER_ID
        if cid and any(o.account == cmd.account and o.client_order_id == cid for o in self.book):
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        if cmd.order_type == OrderType.MARKET and sym.mark:
            probe = RefOrder(0, cmd.account, cmd.symbol, cmd.side, TimeInForce.IOC, cmd.stp, "", False, 0, cmd.qty)
            unbounded = sum(qty for _, qty in self._plan(sym, probe, None)[0])
            inside = sum(qty for _, qty in self._plan(sym, probe, self._market_limit(sym, cmd.side))[0])
            if unbounded > inside:
                return RejectReason.COUNTERPARTY_PRICE_OUTSIDE_BAND
        if cmd.order_type == OrderType.LIMIT:
            open_here = sum(1 for o in self.book if o.account == cmd.account and o.symbol == cmd.symbol)
            if sym.max_open_orders and open_here >= sym.max_open_orders:
                return RejectReason.MAX_OPEN_ORDERS
            if cmd.tif == TimeInForce.GTX and self._crosses(sym, cmd.side, cmd.price):
                return RejectReason.POST_ONLY_WOULD_TAKE
            if cmd.tif == TimeInForce.FOK:
                probe = RefOrder(0, cmd.account, cmd.symbol, cmd.side, cmd.tif, cmd.stp, "", False, cmd.price, cmd.qty)
                steps, _ = self._plan(sym, probe, cmd.price)
                if sum(qty for _, qty in steps) < cmd.qty:
                    return RejectReason.FOK_CANNOT_FILL
        return None

    def _crosses(self, sym: RefSymbol, side: Side, price: int) -> bool:
        for o in self.book:
            if o.symbol == sym.symbol and o.side != side:
                if side == Side.BUY and o.price <= price:
                    return True
                if side == Side.SELL and o.price >= price:
                    return True
        return False

    # ------------------------------------------------------------ matching
    def _plan(self, sym: RefSymbol, taker: RefOrder, limit: int | None) -> tuple[list[tuple[RefOrder, int]], bool]:
        """What matching `taker` would do, without doing it: [(maker, qty or 0 for an STP expiry)], taker expired."""
        steps: list[tuple[RefOrder, int]] = []
        want = taker.open_qty
        for maker in self.resting(sym.symbol, taker.side.opposite):
            if want == 0:
                break
            if limit is not None:
                if taker.side == Side.BUY and maker.price > limit:
                    break
                if taker.side == Side.SELL and maker.price < limit:
                    break
            if maker.account == taker.account and taker.stp != SelfTradePrevention.NONE:
                if taker.stp == SelfTradePrevention.EXPIRE_TAKER:
                    return steps, True
                steps.append((maker, 0))
                if taker.stp == SelfTradePrevention.EXPIRE_BOTH:
                    return steps, True
                continue
            qty = min(want, maker.open_qty)
            steps.append((maker, qty))
            want -= qty
        return steps, False

    def _trade_and_settle(self, sym: RefSymbol, taker: RefOrder, limit: int | None, out: list[tuple]) -> None:
        steps, taker_expired = self._plan(sym, taker, limit)
        for maker, qty in steps:
            if qty == 0:
                self._close(maker, CancelReason.SELF_TRADE, out)
                continue
            maker.filled += qty
            taker.filled += qty
            sym.last = maker.price
            out.append(("trade", maker.price, qty, maker.order_id, taker.order_id, taker.open_qty, maker.open_qty))
            if maker.open_qty == 0:
                self.book.remove(maker)
        if taker.open_qty == 0:
            return
        if taker_expired:
            self._close(taker, CancelReason.SELF_TRADE, out, resting=False)
        elif taker.tif in (TimeInForce.GTC, TimeInForce.GTX):
            self.clock += 1
            taker.arrived = self.clock
            self.book.append(taker)
        else:
            self._close(taker, CancelReason.IOC_REMAINDER, out, resting=False)

    def _close(self, order: RefOrder, reason: CancelReason, out: list[tuple], resting: bool = True) -> None:
        """The order's open quantity is cancelled; it is no longer open."""
        if resting:
            self.book.remove(order)
        canceled = order.open_qty
        order.canceled += canceled
        out.append(("canceled", order.order_id, reason, canceled, order.filled))
