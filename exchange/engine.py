"""The deterministic engine core: a command goes in, a list of events comes out.

Synchronous and free of I/O: it reads no wall clock and no global random
generator, so the same commands always give the same events. Bad input is
answered with an `OrderRejected` event; nothing is changed before a command
has passed every check.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from exchange.brackets import default_table
from exchange.clearing import FUND_ACCOUNT, Clearing
from exchange.clock import Clock, VirtualClock
from exchange.commands import (
    AdjustIsolatedMargin,
    AdvanceClock,
    AmendOrder,
    CancelAll,
    CancelOrder,
    CancelStopOrder,
    Command,
    Deposit,
    PlaceOrder,
    PlaceStopOrder,
    SetAutoMarginAddition,
    SetFeeTier,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    SetPositionMode,
    Transfer,
    UpdateIndex,
    Withdraw,
)
from exchange.conditional import (
    CALLBACK_MAX_PPM,
    CALLBACK_MIN_PPM,
    ConditionalOrder,
    StopType,
    WorkingType,
    crossed,
    trail,
)
from exchange.enums import (
    CancelReason,
    OrderStatus,
    OrderType,
    PositionReason,
    PositionSide,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.events import (
    Event,
    IndexPriceUpdated,
    MarkPriceUpdated,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderRejected,
    PremiumIndexSampled,
    StopOrderAccepted,
    StopOrderCanceled,
    StopTriggered,
    Trade,
)
from exchange.funding import DEFAULT_FUNDING_PARAMS, FundingParams, FundingSchedule
from exchange.index_price import IndexSource
from exchange.instrument import Instrument, default_instruments
from exchange.market import Market
from exchange.market_data import FUNDING, PREMIUM, MarketData, boundaries
from exchange.orders import Order
from exchange.validation import (
    check_amend,
    check_client_order_id,
    check_limit_price,
    check_order,
    is_closing,
    market_band_limit,
)

_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_GTX = TimeInForce.GTX
_GTD = TimeInForce.GTD
_FOK = TimeInForce.FOK
_BUY = Side.BUY
_FILLED = OrderStatus.FILLED
_PARTIAL = OrderStatus.PARTIALLY_FILLED
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_SELF_TRADE = CancelReason.SELF_TRADE
_BOTH = PositionSide.BOTH
_LONG = PositionSide.LONG
# Bound once: an enum member read through its class (OrderStatus.NEW) is a slow lookup on the hot path.
_NEW = OrderStatus.NEW
_IOC = TimeInForce.IOC
_USER = CancelReason.USER
_LIQUIDATION = OrderType.LIQUIDATION
_TRADE_REASON = PositionReason.TRADE
_STATUS_OF = {reason: reason.status for reason in CancelReason}  # a dict read is cheaper than the enum property


class RiskHook(Protocol):
    """The liquidation engine as the engine sees it (liquidation.process.Liquidator)."""

    def after_command(self, out: list[Event]) -> None: ...

    def on_mark(self, m: Market, out: list[Event]) -> None: ...

    def on_time(self, now: int, out: list[Event]) -> None: ...


class Engine:
    """Matching for every configured symbol, with validation and events.

    With a `Clearing`, orders are checked against margin and fills booked
    into positions and wallets; without one, the engine is a pure matcher
    (no accounts: the baseline the benchmarks compare against).
    """

    def __init__(
        self, instruments: Iterable[Instrument] | None = None, clock: Clock | None = None,
        clearing: Clearing | None = None,
        funding_schedule: FundingSchedule | Mapping[str, FundingSchedule] | None = None,
        funding_params: FundingParams | Mapping[str, FundingParams] = DEFAULT_FUNDING_PARAMS,
    ) -> None:
        """`funding_schedule` / `funding_params`: one for every symbol, or per symbol (a symbol left out of the
        mapping gets the default: 8 h, Binance's interest, clamp and cap)."""
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.markets: dict[str, Market] = {}
        for ins in instruments if instruments is not None else default_instruments():
            self.markets[ins.symbol] = Market(ins)
        self.orders: dict[int, Order] = {}  # open orders by id, all symbols
        self._gtd: list[tuple[int, int]] = []  # heap of (good-till date, order id) of resting GTD orders
        self.client_orders: dict[tuple[int, str], Order] = {}  # (account, client order id) -> open order
        self.seq = 0  # last global seq handed out
        self.next_order_id = 1
        self._handlers: dict[type, Callable[[Command, list[Event]], None]] = {
            PlaceOrder: self._place,  # type: ignore[dict-item]
            CancelOrder: self._cancel,  # type: ignore[dict-item]
            CancelAll: self._cancel_all,  # type: ignore[dict-item]
            AmendOrder: self._amend,  # type: ignore[dict-item]
            SetMarkPrice: self._set_mark,  # type: ignore[dict-item]
            AdvanceClock: self._advance_clock,  # type: ignore[dict-item]
            PlaceStopOrder: self._place_stop,  # type: ignore[dict-item]
            UpdateIndex: self._update_index,  # type: ignore[dict-item]
            CancelStopOrder: self._cancel_stop,  # type: ignore[dict-item]
        }
        self.stop_orders: dict[int, ConditionalOrder] = {}  # resting conditional orders by id
        self.client_stops: dict[tuple[int, str], ConditionalOrder] = {}
        self.next_stop_id = 1
        self._prints_seen = 0  # how far into this command's events the last-price stops have looked
        self.max_stop_orders = 10  # Binance MAX_NUM_ALGO_ORDERS per account and symbol
        self.clearing = clearing
        self.risk: RiskHook | None = None  # the liquidation engine, when one is plugged in
        if clearing is not None:
            clearing.attach(self.markets, self._stamp, self._stops_open)
            for cmd_type, method in (
                (Deposit, clearing.deposit), (Withdraw, clearing.withdraw), (Transfer, clearing.transfer),
                (SetLeverage, clearing.set_leverage), (SetMarginMode, clearing.set_margin_mode),
                (SetPositionMode, clearing.set_position_mode), (AdjustIsolatedMargin, clearing.adjust_margin),
                (SetAutoMarginAddition, clearing.set_auto_add), (SetFeeTier, clearing.set_fee_tier),
            ):
                self._handlers[cmd_type] = self._account_command(method)
        for symbol, m in self.markets.items():
            ins = m.instrument
            table = clearing.brackets(symbol) if clearing is not None else default_table(symbol, ins.money_atom)
            schedule = funding_schedule.get(symbol) if isinstance(funding_schedule, Mapping) else funding_schedule
            params = funding_params.get(symbol, DEFAULT_FUNDING_PARAMS) if isinstance(funding_params, Mapping) \
                else funding_params
            m.data = MarketData(ins, table, schedule, params)

    # ------------------------------------------------------------------ API
    def apply(self, cmd: Command) -> list[Event]:
        """Apply one command; return the events it caused, in order."""
        out: list[Event] = []
        try:
            handler = self._handlers[type(cmd)]
        except KeyError:
            self._reject(out, None, 0, type(cmd).__name__, RejectReason.MALFORMED)
            return out
        self._prints_seen = 0
        handler(cmd, out)
        if self.stop_orders:
            self._run_contract_stops(out)
        risk = self.risk
        if risk is not None:
            clearing = self.clearing
            while clearing is not None and clearing.touched:
                risk.after_command(out)
                # liquidation orders print prices too: last-price stops see them, and what those stops trade is
                # checked by the risk monitor again (each stop fires once, so this ends)
                if not self.stop_orders or not self._run_contract_stops(out):
                    break
        return out

    def market(self, symbol: str) -> Market:
        return self.markets[symbol]

    # ------------------------------------------------------------ helpers
    def _stamp(self, m: Market | None) -> tuple[int, int, int]:
        """(seq, symbol_seq, ts) for the next event, of market `m` or of none."""
        self.seq += 1
        if m is None:
            return self.seq, 0, self.clock.now
        m.seq += 1
        return self.seq, m.seq, self.clock.now

    def _account_command(self, method: Callable[[Command, list[Event]], RejectReason | None]
                         ) -> Callable[[Command, list[Event]], None]:
        """Wrap a Clearing command method: a reason it returns becomes a reject event."""
        name = method.__name__

        def handle(cmd: Command, out: list[Event]) -> None:
            try:
                # the insurance fund's account is the exchange's own: no command acts as it (its every change is
                # an InsuranceFundUpdated with its cause, mechanics.md Part 1)
                reason = RejectReason.UNKNOWN_ACCOUNT if getattr(cmd, "account", None) == FUND_ACCOUNT \
                    else method(cmd, out)
            except Exception:  # wrong-typed fields that slipped past the checks: reject, never crash
                if out:
                    raise
                reason = RejectReason.MALFORMED
            if reason is not None:
                symbol = getattr(cmd, "symbol", None)
                m = self.markets.get(symbol) if type(symbol) is str else None
                account = getattr(cmd, "account", 0)
                self._reject(out, m, account if type(account) is int else 0, type(cmd).__name__ or name, reason)

        return handle

    def _reject(
        self, out: list[Event], m: Market | None, account: int, command: str, reason: RejectReason,
        client_order_id: str = "", order_id: int = 0,
    ) -> None:
        self.seq += 1
        if m is not None:
            m.seq += 1
            symbol, sseq = m.instrument.symbol, m.seq
        else:
            symbol, sseq = "", 0
        out.append(OrderRejected(
            self.seq, sseq, self.clock.now, symbol, account, command, reason,
            client_order_id if type(client_order_id) is str else "", order_id,
        ))

    def _rest(self, m: Market, order: Order) -> None:
        """Put `order` in the book and in the indexes of open orders: by id, by account, by client order id."""
        m.book.add(order)
        if self.clearing is not None:
            self.clearing.exposure_add(order, order.leaves)
        oid = order.order_id
        account = order.account
        self.orders[oid] = order
        by_acc = m.open_by_account.get(account)
        if by_acc is None:
            m.open_by_account[account] = {oid: order}
        else:
            by_acc[oid] = order
        if order.client_order_id:
            self.client_orders[(account, order.client_order_id)] = order

    def _unindex(self, m: Market, order: Order) -> None:
        """Forget a no-longer-open order (it has already left the book)."""
        oid = order.order_id
        account = order.account
        del self.orders[oid]
        by_acc = m.open_by_account[account]
        del by_acc[oid]
        if not by_acc:
            del m.open_by_account[account]
        if order.client_order_id:
            del self.client_orders[(account, order.client_order_id)]

    def _close_unfilled(self, out: list[Event], m: Market, order: Order, reason: CancelReason) -> None:
        """Book `order`'s open quantity as cancelled/expired and publish it (the caller unbooks it)."""
        qty = order.leaves
        order.canceled += qty
        order.leaves = 0
        order.status = status = _STATUS_OF[reason]
        self.seq = seq = self.seq + 1
        m.seq = sseq = m.seq + 1
        out.append(OrderCanceled(
            seq, sseq, self.clock.now, m.instrument.symbol, order.order_id, order.account,
            order.client_order_id, reason, status, qty, order.filled,
        ))

    def _find(self, m: Market, account: int, order_id: int, client_order_id: str) -> Order | None:
        if type(account) is not int:  # an unhashable account would raise in the client-order-id lookup
            return None
        if order_id:
            order = self.orders.get(order_id) if type(order_id) is int else None
        elif client_order_id and type(client_order_id) is str:
            order = self.client_orders.get((account, client_order_id))
        else:
            return None
        if order is None or order.account != account or order.symbol != m.instrument.symbol:
            return None
        return order

    # ------------------------------------------------------------ matching
    def _take(self, out: list[Event], m: Market, taker: Order, limit: int | None) -> bool:
        """Match `taker` against the book; publish trades and STP expiries. True if STP expired the taker."""
        steps, stp_expired = m.book.match(taker, limit)
        if not steps:
            return stp_expired
        symbol = m.instrument.symbol
        ts = self.clock.now
        side = taker.side
        tid, tacc = taker.order_id, taker.account
        filled = taker.filled
        notional = taker.notional_filled
        tleaves = taker.qty - filled - taker.canceled
        clearing = self.clearing
        if clearing is not None:
            return self._take_cleared(out, m, taker, steps, stp_expired, clearing)
        seq = self.seq
        sseq = m.seq
        trade_id = m.trade_seq
        orders = self.orders
        open_by_account = m.open_by_account
        price = 0
        for maker, qty in steps:
            if qty:
                price = maker.price
                filled += qty
                notional += qty * price
                tleaves -= qty
                seq += 1
                sseq += 1
                trade_id += 1
                mleaves = maker.leaves
                out.append(Trade(
                    seq, sseq, ts, symbol, trade_id, price, qty, side, tid, tacc,
                    maker.order_id, maker.account, tleaves, mleaves,
                ))
                if mleaves:
                    maker.status = _PARTIAL
                else:
                    maker.status = _FILLED
                    # a filled maker is no longer open: `_unindex`, written out (most fills end a maker)
                    moid = maker.order_id
                    macc = maker.account
                    del orders[moid]
                    by_acc = open_by_account[macc]
                    del by_acc[moid]
                    if not by_acc:
                        del open_by_account[macc]
                    if maker.client_order_id:
                        del self.client_orders[(macc, maker.client_order_id)]
            else:
                self.seq, m.seq = seq, sseq
                self._close_unfilled(out, m, maker, _SELF_TRADE)
                seq, sseq = self.seq, m.seq
                self._unindex(m, maker)
        self.seq, m.seq = seq, sseq
        m.trade_seq = trade_id
        if price:
            m.last_price = price
        taker.filled = filled
        taker.notional_filled = notional
        taker.status = _FILLED if not taker.leaves else _PARTIAL if filled else taker.status
        return stp_expired

    def _take_cleared(self, out: list[Event], m: Market, taker: Order, steps: list[tuple[Order, int]],
                      stp_expired: bool, clearing: Clearing) -> bool:
        """`_take` with margin: each fill is booked for both sides right after its trade event.

        (`Clearing.settle` for both sides, written out: the taker's account and fee rate are looked up once.)
        """
        ins = m.instrument
        symbol = ins.symbol
        side, tid, tacc = taker.side, taker.order_id, taker.account
        tpside = taker.position_side
        tleaves = taker.qty - taker.filled - taker.canceled
        accounts = clearing.accounts
        book_fill = clearing.book_fill
        taker_acct = accounts[tacc]
        if taker.order_type is _LIQUIDATION:
            taker_fee, taker_reason, taker_liq = ins.clearance_fee_ppm, PositionReason.LIQUIDATION, True
        else:
            taker_fee, taker_reason, taker_liq = taker_acct.taker_fee_ppm, _TRADE_REASON, False
        touched = {(tacc, tpside)}
        for maker, qty in steps:
            if qty:
                price = maker.price
                tleaves -= qty
                self.seq = seq = self.seq + 1
                m.seq = sseq = m.seq + 1
                m.trade_seq = trade_id = m.trade_seq + 1
                out.append(Trade(
                    seq, sseq, self.clock.now, symbol, trade_id, price, qty, side, tid, tacc,
                    maker.order_id, maker.account, tleaves, maker.leaves,
                ))
                taker.filled += qty
                taker.notional_filled += qty * price
                m.last_price = price
                clearing.exposure_remove(maker, qty, not maker.leaves)
                book_fill(out, m, taker_acct, tpside, side, qty, price, taker_fee, trade_id, taker_reason, taker_liq)
                # (a maker is never a LIQUIDATION order: those are IOC, `send_ioc`, and never rest)
                maker_acct = accounts[maker.account]
                book_fill(out, m, maker_acct, maker.position_side, maker.side, qty, price, maker_acct.maker_fee_ppm,
                          trade_id, _TRADE_REASON)
                touched.add((maker.account, maker.position_side))
                if maker.leaves:
                    maker.status = _PARTIAL
                else:
                    maker.status = _FILLED
                    self._unindex(m, maker)
            else:
                clearing.exposure_remove(maker, maker.leaves, True)
                self._close_unfilled(out, m, maker, _SELF_TRADE)
                self._unindex(m, maker)
        taker.status = _FILLED if not taker.leaves else _PARTIAL if taker.filled else taker.status
        # resting reduce-only orders the new positions can no longer absorb (only accounts that have some)
        trim = []
        for account, pside in touched:
            e = accounts[account].exposure.get((symbol, pside))
            if e is not None and e.reduce_only:
                trim.append((account, pside))
        for account, pside in sorted(trim, key=lambda t: (t[0], t[1].value)):
            self._trim_reduce_only(out, m, account, pside)
        return stp_expired

    def _trim_reduce_only(self, out: list[Event], m: Market, account: int, pside: PositionSide) -> None:
        """Expire resting reduce-only orders that the position can no longer absorb (newest first)."""
        assert self.clearing is not None
        for order in self.clearing.excess_reduce_only(account, m.instrument.symbol, pside):
            self._cancel_resting(out, m, order, CancelReason.REDUCE_ONLY)

    def _cancel_resting(self, out: list[Event], m: Market, order: Order, reason: CancelReason) -> None:
        """Take a resting order out of the book and publish why.

        `_close_unfilled` and `_unindex`, written out: every cancel comes this way.
        """
        m.book.remove(order)
        if self.clearing is not None:
            self.clearing.exposure_remove(order, order.leaves, True)
        qty = order.leaves
        order.canceled += qty
        order.leaves = 0
        order.status = status = _STATUS_OF[reason]
        self.seq = seq = self.seq + 1
        m.seq = sseq = m.seq + 1
        oid = order.order_id
        account = order.account
        client_order_id = order.client_order_id
        out.append(OrderCanceled(
            seq, sseq, self.clock.now, m.instrument.symbol, oid, account, client_order_id, reason, status, qty,
            order.filled,
        ))
        del self.orders[oid]
        open_by_account = m.open_by_account
        by_acc = open_by_account[account]
        del by_acc[oid]
        if not by_acc:
            del open_by_account[account]
        if client_order_id:
            del self.client_orders[(account, client_order_id)]

    # ------------------------------------------------------------ commands
    def _place(self, cmd: PlaceOrder, out: list[Event]) -> None:
        symbol = cmd.symbol
        m = self.markets.get(symbol) if type(symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "PlaceOrder", RejectReason.UNKNOWN_SYMBOL, cmd.client_order_id)
            return
        clearing = self.clearing
        try:
            mark = m.mark_price
            reason = check_order(m.instrument, cmd, mark, mark or m.last_price)
            if reason is None:
                # The rules that need the engine's state, in this order: a client order id already in use, the
                # open-order limit (limit orders), and for GTX and FOK what the book holds. Written out here
                # rather than in a method of their own: every order passes this way.
                client_order_id = cmd.client_order_id
                if client_order_id and (cmd.account, client_order_id) in self.client_orders:
                    reason = RejectReason.DUPLICATE_CLIENT_ORDER_ID
                elif cmd.order_type is _LIMIT:
                    limit = m.instrument.max_open_orders
                    if limit and len(m.open_by_account.get(cmd.account, ())) >= limit:
                        reason = RejectReason.MAX_OPEN_ORDERS
                    elif cmd.tif is not _GTC:
                        reason = self._check_entry(m, cmd)
            if reason is None and clearing is not None:
                reason = clearing.check_order(m, cmd)
            if reason is None and mark and cmd.order_type is _MARKET:
                reason = self._check_market_band(m, cmd, mark)
        except Exception:  # a command with fields of the wrong types: reject, never crash
            reason = RejectReason.MALFORMED
        if reason is not None:
            self._reject(out, m, cmd.account, "PlaceOrder", reason, cmd.client_order_id)
            return
        # Every field now has its proper type; read each once.
        account = cmd.account
        side = cmd.side
        otype = cmd.order_type
        price = cmd.price
        qty = cmd.qty
        client_order_id = cmd.client_order_id
        stp = cmd.stp
        pside = cmd.position_side
        is_limit = otype is _LIMIT
        tif = cmd.tif if is_limit else _IOC
        good_till = cmd.good_till_date if tif is _GTD else 0
        reduce_only = cmd.reduce_only or (pside is not _BOTH and (pside is _LONG) != (side is _BUY))  # is_closing
        oid = self.next_order_id
        self.next_order_id = oid + 1
        ts = self.clock.now
        symbol = m.instrument.symbol
        order = Order(
            oid, account, symbol, side, otype, tif, price, qty, qty,
            0, 0, client_order_id, reduce_only, stp, _NEW, ts, 0, pside, good_till,
        )
        self.seq = seq = self.seq + 1
        m.seq = sseq = m.seq + 1
        out.append(OrderAccepted(
            seq, sseq, ts, symbol, oid, account, client_order_id, side, otype, tif, price, qty, reduce_only, stp, pside,
            good_till,
        ))
        # A reduce-only taker may fill only what the position has left to close; the rest expires.
        withheld = 0
        if reduce_only and clearing is not None:
            withheld = max(0, qty - clearing.closable(order))
            order.leaves -= withheld
        if not is_limit:  # a market order matches up to the band (`_check_market_band` refused one needing more;
            # the bound still decides where it stops: at the band, before an own order past it that STP would meet)
            stp_expired = self._take(out, m, order, market_band_limit(m.instrument, side, mark) if mark else None)
        elif m.book.crosses(side, price):
            stp_expired = self._take(out, m, order, price)
        else:
            stp_expired = False
        if withheld:
            order.leaves += withheld
            self._close_unfilled(out, m, order, CancelReason.REDUCE_ONLY)
        if order.leaves:
            if stp_expired:
                self._close_unfilled(out, m, order, _SELF_TRADE)
            elif tif is _GTC or tif is _GTX or tif is _GTD:
                # Rest it: the book, then the indexes of open orders (what `_rest` does, written out here because
                # most orders end this way)
                m.book.add(order)
                if clearing is not None:
                    clearing.exposure_add(order, order.leaves)
                self.orders[oid] = order
                by_acc = m.open_by_account.get(account)
                if by_acc is None:
                    m.open_by_account[account] = {oid: order}
                else:
                    by_acc[oid] = order
                if client_order_id:
                    self.client_orders[(account, client_order_id)] = order
                if good_till:
                    heapq.heappush(self._gtd, (good_till, oid))
            else:
                self._close_unfilled(out, m, order, _IOC_REMAINDER)

    def _check_market_band(self, m: Market, cmd: PlaceOrder, mark: int) -> RejectReason | None:
        """A MARKET order may not need a price past the PERCENT_PRICE band around the mark (binance-api.md
        §4.3.1, -4131): what it could fill with no bound against what it could fill inside the band, self-trade
        prevention included; a closing order counted only for what it may close (the rest would be clipped)."""
        side, qty, ps = cmd.side, cmd.qty, cmd.position_side
        if self.clearing is not None and is_closing(cmd.reduce_only, ps, side):
            qty = min(qty, self.clearing.closable_qty(cmd.account, m.instrument.symbol, ps, side))
        book = m.book
        band = market_band_limit(m.instrument, side, mark)
        if book.fillable_qty(side, None, cmd.account, cmd.stp, qty) > book.fillable_qty(side, band, cmd.account,
                                                                                         cmd.stp, qty):
            return RejectReason.COUNTERPARTY_PRICE_OUTSIDE_BAND
        return None

    def _check_entry(self, m: Market, cmd: PlaceOrder) -> RejectReason | None:
        """The entry rules of the other times in force, which read the book or the clock: GTD needs a good-till
        date after now, GTX must not take, FOK must fill in full now. (The other rules that need the engine's
        state, a duplicate client order id and the open-order limit, come first, in `_place`.)"""
        tif = cmd.tif
        if tif is _GTD:  # GTD needs a good-till date still to come
            good_till = cmd.good_till_date
            if type(good_till) is not int or good_till <= self.clock.now:
                return RejectReason.GOOD_TILL_DATE_INVALID
        if tif is _GTX and m.book.crosses(cmd.side, cmd.price):
            return RejectReason.POST_ONLY_WOULD_TAKE
        if tif is _FOK and m.book.fillable_qty(cmd.side, cmd.price, cmd.account, cmd.stp, cmd.qty) < cmd.qty:
            return RejectReason.FOK_CANNOT_FILL
        return None

    def _cancel(self, cmd: CancelOrder, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "CancelOrder", RejectReason.UNKNOWN_SYMBOL, cmd.client_order_id)
            return
        account = cmd.account
        order_id = cmd.order_id
        if order_id and type(order_id) is int and type(account) is int:  # `_find`'s common case, written out
            order = self.orders.get(order_id)
            if order is not None and (order.account != account or order.symbol != m.instrument.symbol):
                order = None
        else:
            order = self._find(m, account, order_id, cmd.client_order_id)
        if order is None:
            self._reject(
                out, m, cmd.account, "CancelOrder", RejectReason.UNKNOWN_ORDER, cmd.client_order_id,
                cmd.order_id if type(cmd.order_id) is int else 0,
            )
            return
        self._cancel_resting(out, m, order, _USER)

    def _cancel_all(self, cmd: CancelAll, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "CancelAll", RejectReason.UNKNOWN_SYMBOL)
            return
        if type(cmd.account) is not int:
            self._reject(out, m, 0, "CancelAll", RejectReason.MALFORMED)
            return
        for order in list(m.open_by_account.get(cmd.account, {}).values()):
            self._cancel_resting(out, m, order, CancelReason.USER)

    def _amend(self, cmd: AmendOrder, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "AmendOrder", RejectReason.UNKNOWN_SYMBOL, cmd.client_order_id)
            return
        order = self._find(m, cmd.account, cmd.order_id, cmd.client_order_id)
        reason: RejectReason | None
        if order is None:
            reason = RejectReason.UNKNOWN_ORDER
        else:
            try:
                reason = check_amend(m.instrument, order.side, cmd, m.mark_price, order.reduce_only)
            except Exception:
                reason = RejectReason.MALFORMED
            if reason is None:
                if cmd.qty <= order.filled:
                    reason = RejectReason.AMEND_QTY_BELOW_FILLED
                elif cmd.qty == order.qty and cmd.price == order.price:
                    reason = RejectReason.AMEND_NO_CHANGE
                elif cmd.price != order.price and order.tif is _GTX and m.book.crosses(order.side, cmd.price):
                    reason = RejectReason.POST_ONLY_WOULD_TAKE
                elif self.clearing is not None:  # margin, position cap, reduce-only: as for a new order
                    reason = self.clearing.check_amend(m, order, cmd.qty, cmd.price)
        if reason is not None:
            self._reject(
                out, m, cmd.account, "AmendOrder", reason, cmd.client_order_id,
                order.order_id if order is not None else (cmd.order_id if type(cmd.order_id) is int else 0),
            )
            return
        assert order is not None
        book = m.book
        keep = cmd.price == order.price and cmd.qty < order.qty
        if keep:
            if self.clearing is not None:
                self.clearing.exposure_remove(order, order.qty - cmd.qty, False)
            book.reduce(order, order.qty - cmd.qty)
            order.qty = cmd.qty
            amended = order
        else:
            # Priority lost: the old object dies in place; a copy goes to the back of the new level.
            book.remove(order)
            if self.clearing is not None:
                self.clearing.exposure_remove(order, order.leaves, True)
            self._unindex(m, order)
            amended = Order(
                order.order_id, order.account, order.symbol, order.side, order.order_type, order.tif,
                cmd.price, cmd.qty, cmd.qty - order.filled, order.filled, order.canceled,
                order.client_order_id, order.reduce_only, order.stp, order.status, self.clock.now,
                order.notional_filled, order.position_side, order.good_till_date,
            )
            order.leaves = 0
        self.seq += 1
        m.seq += 1
        out.append(OrderAmended(
            self.seq, m.seq, self.clock.now, m.instrument.symbol, amended.order_id, amended.account,
            amended.price, amended.qty, amended.leaves, keep,
        ))
        if keep:
            return
        stp_expired = False
        if book.crosses(amended.side, amended.price):
            stp_expired = self._take(out, m, amended, amended.price)
        if amended.leaves:
            if stp_expired:
                self._close_unfilled(out, m, amended, _SELF_TRADE)
            else:
                self._rest(m, amended)

    def _set_mark(self, cmd: SetMarkPrice, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, 0, "SetMarkPrice", RejectReason.UNKNOWN_SYMBOL)
            return
        if type(cmd.price) is not int or cmd.price <= 0:
            self._reject(out, m, 0, "SetMarkPrice", RejectReason.PRICE_REQUIRED)
            return
        self._publish_mark(out, m, cmd.price)

    def on_mark(self, m: Market, out: list[Event]) -> None:
        """A new mark price: mark-price stops fire first (a trader's stop-loss gets its chance), then the risk
        monitor looks at the positions the mark may have put at risk."""
        if self.stop_orders:
            self._fire_stops(out, m, WorkingType.MARK_PRICE, m.mark_price)
            self._run_contract_stops(out)
        if self.risk is not None:
            self.risk.on_mark(m, out)

    def _advance_clock(self, cmd: AdvanceClock, out: list[Event]) -> None:
        """Move virtual time, stopping at every premium sample, funding time and mark tick on the way."""
        clock = self.clock
        if type(cmd.ts) is not int or cmd.ts < clock.now or not isinstance(clock, VirtualClock):
            self._reject(out, None, 0, "AdvanceClock", RejectReason.MALFORMED)
            return
        steps = []
        for symbol, m in self.markets.items():
            if m.data is not None and m.data.live:
                steps += [(t, kind, symbol) for t, kind in boundaries(clock.now, cmd.ts, m.data.schedule)]
        steps.sort()
        for t, kind, symbol in steps:
            self._expire_gtd(out, t)
            clock.advance_to(t)
            self._market_data_step(out, self.markets[symbol], kind, t)
        self._expire_gtd(out, cmd.ts)
        clock.advance_to(cmd.ts)
        if self.risk is not None:
            self.risk.on_time(cmd.ts, out)

    def _expire_gtd(self, out: list[Event], until: int) -> None:
        """Expire the GTD orders whose good-till date is `until` or before, each at its own time, oldest date
        first (ties by order id). Entries of orders that have left the book since are skipped."""
        heap = self._gtd
        while heap and heap[0][0] <= until:
            t, oid = heapq.heappop(heap)
            order = self.orders.get(oid)
            if order is None or order.good_till_date != t:
                continue
            self.clock.advance_to(t)  # type: ignore[attr-defined]  (only a VirtualClock comes this way)
            self._cancel_resting(out, self.markets[order.symbol], order, CancelReason.GTD_EXPIRED)

    def _market_data_step(self, out: list[Event], m: Market, kind: int, t: int) -> None:
        data = m.data
        assert data is not None
        book = m.book
        if kind == PREMIUM:
            bids = [(lv.price, lv.qty) for lv in book.bids.by_priority()]
            asks = [(lv.price, lv.qty) for lv in book.asks.by_priority()]
            premium = data.funding.sample(data.index_price, bids, asks)
            seq, sseq, ts = self._stamp(m)
            out.append(PremiumIndexSampled(seq, sseq, ts, m.instrument.symbol, premium, data.funding.predicted_rate()))
        elif kind == FUNDING:
            rate = data.funding.settle()
            if self.clearing is not None and (m.mark_price or m.last_price):
                self.clearing.settle_funding(out, m, rate, t)
        else:
            data.mark_model.sample_basis(t, data.index_price, book.best_bid(), book.best_ask())
            mark = data.mark_model.mark_at(t, data.index_price, m.last_price or None, data.funding.last_rate,
                                           data.schedule.next_funding_time(t))
            if mark != m.mark_price:
                self._publish_mark(out, m, mark)

    def _publish_mark(self, out: list[Event], m: Market, mark: int) -> None:
        m.mark_price = mark
        data = m.data
        seq, sseq, ts = self._stamp(m)
        if data is not None and data.live:
            out.append(MarkPriceUpdated(seq, sseq, ts, m.instrument.symbol, mark, data.index_price,
                                        data.funding.predicted_rate(), data.schedule.next_funding_time(ts)))
        else:
            out.append(MarkPriceUpdated(seq, sseq, ts, m.instrument.symbol, mark))
        self.on_mark(m, out)

    def _update_index(self, cmd: UpdateIndex, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None or m.data is None:
            self._reject(out, None, 0, "UpdateIndex", RejectReason.UNKNOWN_SYMBOL)
            return
        try:
            sources = [IndexSource(str(v), int(w), p) for v, w, p in cmd.sources]
            ok = all(type(s.weight) is int and s.weight >= 0 and (s.price_ticks is None or
                     (type(s.price_ticks) is int and s.price_ticks > 0)) for s in sources)
        except (TypeError, ValueError):
            ok = False
        if not ok or not sources:
            self._reject(out, m, 0, "UpdateIndex", RejectReason.MALFORMED)
            return
        if m.data.update_sources(sources):
            seq, sseq, ts = self._stamp(m)
            out.append(IndexPriceUpdated(seq, sseq, ts, m.instrument.symbol, m.data.index_price))
            if not m.mark_price and m.data.live:
                self._publish_mark(out, m, m.data.index_price)  # a first mark at once, not a second later

    # ------------------------------------------------------------ conditional orders
    def _place_stop(self, cmd: PlaceStopOrder, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "PlaceStopOrder", RejectReason.UNKNOWN_SYMBOL, cmd.client_order_id)
            return
        try:
            reason = self._check_stop(m, cmd)
        except Exception:  # wrong-typed fields: reject, never crash
            reason = RejectReason.MALFORMED
        if reason is not None:
            self._reject(out, m, cmd.account, "PlaceStopOrder", reason, cmd.client_order_id)
            return
        stop = ConditionalOrder(
            self.next_stop_id, cmd.account, m.instrument.symbol, cmd.side, cmd.stop_type, cmd.working_type,
            cmd.trigger_price, 0 if cmd.close_position else cmd.qty, cmd.price, cmd.tif,
            # hedge mode says closing by the position side, never by the flag (Binance refuses reduceOnly there)
            (cmd.reduce_only or cmd.close_position) and cmd.position_side is _BOTH, cmd.close_position,
            cmd.position_side, cmd.client_order_id, cmd.callback_ppm, cmd.activation_price,
        )
        self.next_stop_id += 1
        if stop.stop_type is StopType.TRAILING_STOP_MARKET:
            stop.trigger_price = 0
            current = self._stop_source_price(m, stop.working_type)
            if current:
                trail(stop, current)
        self.stop_orders[stop.stop_id] = stop
        if stop.client_order_id:
            self.client_stops[(stop.account, stop.client_order_id)] = stop
        m.stops[stop.working_type].add(stop)
        # the next print is checked whatever its price: `stop_checked_last` dedupes repeated prints for the stops
        # already there, and may be stale from commands run while no stop was waiting
        m.stop_checked_last = 0
        seq, sseq, ts = self._stamp(m)
        out.append(StopOrderAccepted(
            seq, sseq, ts, stop.symbol, stop.stop_id, stop.account, stop.client_order_id, stop.side, stop.stop_type,
            stop.working_type, stop.trigger_price, stop.qty, stop.price, stop.reduce_only, stop.close_position,
            stop.position_side, stop.callback_ppm, stop.activation_price,
        ))

    @staticmethod
    def _stop_source_price(m: Market, working_type: WorkingType) -> int:
        return m.mark_price if working_type is WorkingType.MARK_PRICE else m.last_price

    def _check_stop(self, m: Market, cmd: PlaceStopOrder) -> RejectReason | None:
        ins = m.instrument
        if cmd.side is not Side.BUY and cmd.side is not Side.SELL:
            return RejectReason.INVALID_SIDE
        if type(cmd.stop_type) is not StopType or type(cmd.working_type) is not WorkingType:
            return RejectReason.INVALID_ORDER_TYPE
        if type(cmd.close_position) is not bool or type(cmd.reduce_only) is not bool:
            return RejectReason.MALFORMED
        if cmd.reduce_only and cmd.position_side is not _BOTH:
            return RejectReason.REDUCE_ONLY_REJECTED  # hedge mode: as for plain orders (Clearing.check_order)
        if cmd.tif is _GTD:
            return RejectReason.INVALID_TIME_IN_FORCE  # a stop carries no good-till date to give the order it places
        reason = check_client_order_id(cmd.client_order_id)
        if reason is not None:
            return reason
        if cmd.client_order_id and (cmd.account, cmd.client_order_id) in self.client_stops:
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        if not cmd.close_position:
            if type(cmd.qty) is not int or cmd.qty <= 0:
                return RejectReason.QTY_NOT_POSITIVE
            if cmd.qty > (ins.max_market_qty_lots if cmd.stop_type.is_market else ins.max_qty_lots):
                return RejectReason.QTY_ABOVE_MAX
            if cmd.qty < ins.min_qty_lots:
                return RejectReason.QTY_BELOW_MIN
        elif not cmd.stop_type.is_market:
            return RejectReason.REDUCE_ONLY_REJECTED  # closePosition only with the *_MARKET types, as on Binance
        if not cmd.stop_type.is_market:
            if type(cmd.price) is not int or cmd.price <= 0:
                return RejectReason.PRICE_REQUIRED
            reason = check_limit_price(ins, cmd.side, cmd.price, 0)  # PRICE_FILTER (the band is checked when it fires)
            if reason is not None:
                return reason
        current = self._stop_source_price(m, cmd.working_type)
        if cmd.stop_type is StopType.TRAILING_STOP_MARKET:
            if type(cmd.callback_ppm) is not int or not CALLBACK_MIN_PPM <= cmd.callback_ppm <= CALLBACK_MAX_PPM:
                return RejectReason.INVALID_CALLBACK_RATE
            act = cmd.activation_price
            if type(act) is not int or act < 0:
                return RejectReason.MALFORMED
            if act:
                reason = check_limit_price(ins, cmd.side, act, 0)  # PRICE_FILTER, as for a trigger
                if reason is not None:
                    return reason
                # Binance: a SELL's activation price must be above the latest price, a BUY's below it; one
                # already reached would activate at once (-2021, binance-api.md §4.4: "trigger already crossed")
                if current and (act <= current if cmd.side is Side.SELL else act >= current):
                    return RejectReason.WOULD_IMMEDIATELY_TRIGGER
        else:
            trig = cmd.trigger_price
            if type(trig) is not int or trig <= 0:
                return RejectReason.PRICE_REQUIRED
            reason = check_limit_price(ins, cmd.side, trig, 0)  # PRICE_FILTER applies to the trigger too
            if reason is not None:
                return reason
            probe = ConditionalOrder(0, 0, "", cmd.side, cmd.stop_type, cmd.working_type, trig, 0)
            if current and crossed(probe, current):
                return RejectReason.WOULD_IMMEDIATELY_TRIGGER
        if not cmd.close_position and not is_closing(cmd.reduce_only, cmd.position_side, cmd.side):
            # MIN_NOTIONAL now, not first when it fires (a stop-loss accepted now and refused when it fires
            # would leave a bot unprotected without a word): valued at its limit price, else its trigger, else
            # (trailing) its activation or the current price; reduce-only and closing orders are exempt
            value = cmd.price if not cmd.stop_type.is_market else (
                cmd.trigger_price if cmd.stop_type is not StopType.TRAILING_STOP_MARKET
                else cmd.activation_price or current)
            if value and value * cmd.qty * ins.atoms_per_tick_lot < ins.min_notional_atoms:
                return RejectReason.MIN_NOTIONAL
        per_account = sum(1 for s in self.stop_orders.values() if s.account == cmd.account and s.symbol == ins.symbol)
        if per_account >= self.max_stop_orders:
            return RejectReason.MAX_STOP_ORDERS
        if self.clearing is not None:
            acct = self.clearing.accounts.get(cmd.account)
            if acct is None or acct.id == FUND_ACCOUNT:
                return RejectReason.UNKNOWN_ACCOUNT
            hedge = acct.position_mode.value == "HEDGE"
            if (cmd.position_side is _BOTH) == hedge:
                return RejectReason.POSITION_SIDE_MISMATCH
        elif cmd.position_side is not _BOTH:
            return RejectReason.POSITION_SIDE_MISMATCH
        return None

    def _stops_open(self, account: int, symbol: str | None) -> bool:
        """Whether `account` has conditional orders waiting, in `symbol` (None: in any)."""
        return any(s.account == account and (symbol is None or s.symbol == symbol) for s in self.stop_orders.values())

    def _cancel_stop(self, cmd: CancelStopOrder, out: list[Event]) -> None:
        m = self.markets.get(cmd.symbol) if type(cmd.symbol) is str else None
        if m is None:
            self._reject(out, None, cmd.account, "CancelStopOrder", RejectReason.UNKNOWN_SYMBOL, cmd.client_order_id)
            return
        stop = None
        if cmd.stop_id and type(cmd.stop_id) is int:
            stop = self.stop_orders.get(cmd.stop_id)
        elif cmd.client_order_id and type(cmd.client_order_id) is str:
            stop = self.client_stops.get((cmd.account, cmd.client_order_id))
        if stop is None or stop.account != cmd.account or stop.symbol != m.instrument.symbol:
            self._reject(out, m, cmd.account, "CancelStopOrder", RejectReason.UNKNOWN_ORDER, cmd.client_order_id)
            return
        self._withdraw_stop(out, m, stop, CancelReason.USER)

    def _withdraw_stop(self, out: list[Event], m: Market, stop: ConditionalOrder, reason: CancelReason) -> None:
        """Take a waiting conditional order away and say why (StopOrderCanceled)."""
        self._drop_stop(m, stop)
        seq, sseq, ts = self._stamp(m)
        out.append(StopOrderCanceled(seq, sseq, ts, stop.symbol, stop.stop_id, stop.account, stop.client_order_id,
                                     reason))

    def _drop_stop(self, m: Market, stop: ConditionalOrder) -> None:
        m.stops[stop.working_type].remove(stop)
        del self.stop_orders[stop.stop_id]
        if stop.client_order_id:
            self.client_stops.pop((stop.account, stop.client_order_id), None)

    def _run_contract_stops(self, out: list[Event]) -> bool:
        """Last-price stops against every trade price printed in this command, in print order.

        The last price is each trade's price in turn, not only where a sweep ended: a stop at 78,950 fires on
        a print at 78,900 even if a later trade of the same command prints 79,500. Orders the stops place
        append their own trades to `out`, and the scan goes on over them. Returns whether a stop fired.
        """
        fired = False
        i = self._prints_seen
        markets = self.markets
        while i < len(out):
            e = out[i]
            i += 1
            if type(e) is Trade:
                m = markets[e.symbol]
                if e.price != m.stop_checked_last:
                    m.stop_checked_last = e.price
                    self._prints_seen = i
                    fired = self._fire_stops(out, m, WorkingType.CONTRACT_PRICE, e.price) or fired
        self._prints_seen = i
        return fired

    def _fire_stops(self, out: list[Event], m: Market, working_type: WorkingType, price: int) -> bool:
        """Trigger the stops of `working_type` that `price` crosses; return whether any fired."""
        fired = m.stops[working_type].update(price)
        for stop_id in fired:
            stop = self.stop_orders.pop(stop_id)
            if stop.client_order_id:
                self.client_stops.pop((stop.account, stop.client_order_id), None)
            self._trigger(out, m, stop, price)
        return bool(fired)

    def _trigger(self, out: list[Event], m: Market, stop: ConditionalOrder, price: int) -> None:
        """Place the order a conditional order stands for, and say what became of it."""
        qty = stop.qty
        if stop.close_position:
            qty = self.clearing.closable(_probe_order(stop)) if self.clearing is not None else 0
        seq, sseq, ts = self._stamp(m)
        event = StopTriggered(seq, sseq, ts, stop.symbol, stop.stop_id, stop.account, stop.client_order_id,
                              stop.working_type, stop.trigger_price, price, "PLACED")
        out.append(event)
        if qty <= 0:
            event.outcome, event.reason = "EXPIRED", "NO_POSITION"
            return
        cmd = PlaceOrder(
            account=stop.account, symbol=stop.symbol, side=stop.side, qty=qty,
            price=0 if stop.stop_type.is_market else stop.price,
            order_type=OrderType.MARKET if stop.stop_type.is_market else OrderType.LIMIT,
            tif=stop.tif, reduce_only=stop.reduce_only, position_side=stop.position_side,
        )
        first = len(out)
        self._place(cmd, out)
        placed = out[first] if len(out) > first else None
        if isinstance(placed, OrderRejected):
            event.outcome, event.reason = "REJECTED", placed.reason.value
        elif isinstance(placed, OrderAccepted):
            event.order_id = placed.order_id

    # ------------------------------------------------------------ the liquidation engine's venue
    def cancel_account_orders(self, out: list[Event], account: int, symbol: str | None,
                              reason: CancelReason = CancelReason.LIQUIDATION) -> None:
        """Cancel an account's resting orders in one symbol (or all), releasing the margin they held."""
        for sym in [symbol] if symbol is not None else sorted(self.markets):
            m = self.markets[sym]
            for order in list(m.open_by_account.get(account, {}).values()):
                self._cancel_resting(out, m, order, reason)

    def cancel_account_stops(self, out: list[Event], account: int, symbol: str | None,
                             reason: CancelReason = CancelReason.LIQUIDATION) -> None:
        """Cancel an account's conditional orders in one symbol (or all), in stop id order."""
        for stop in sorted((s for s in self.stop_orders.values()
                            if s.account == account and (symbol is None or s.symbol == symbol)),
                           key=lambda s: s.stop_id):
            self._withdraw_stop(out, self.markets[stop.symbol], stop, reason)

    def send_ioc(self, out: list[Event], m: Market, account: int, position_side: PositionSide, side: Side,
                 qty: int, price: int, order_type: OrderType) -> tuple[int, int]:
        """An IOC limit order placed by the exchange itself (liquidation, fund offload): no entry checks.

        Returns (filled lots, Σ price × qty of its fills in tick·lots); the rest expires.
        """
        oid = self.next_order_id
        self.next_order_id = oid + 1
        reduce_only = order_type is OrderType.LIQUIDATION
        order = Order(oid, account, m.instrument.symbol, side, order_type, TimeInForce.IOC, price, qty, qty, 0, 0, "",
                      reduce_only, SelfTradePrevention.NONE, OrderStatus.NEW, self.clock.now, 0, position_side)
        seq, sseq, ts = self._stamp(m)
        out.append(OrderAccepted(seq, sseq, ts, order.symbol, oid, account, "", side, order_type, TimeInForce.IOC,
                                 price, qty, reduce_only, SelfTradePrevention.NONE, position_side))
        if m.book.crosses(side, price):
            self._take(out, m, order, price)
        if order.leaves:
            self._close_unfilled(out, m, order, _IOC_REMAINDER)
        return order.filled, order.notional_filled


def _probe_order(stop: ConditionalOrder) -> Order:
    """An Order-shaped view of a conditional order, for the clearing's position queries."""
    return Order(0, stop.account, stop.symbol, stop.side, OrderType.MARKET, TimeInForce.IOC, 0, 0, 0,
                 position_side=stop.position_side)


def client_order_id_valid(client_order_id: str) -> bool:
    return check_client_order_id(client_order_id) is None
