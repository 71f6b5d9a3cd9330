"""Property test: the engine against the naive reference matcher, on random command sequences.

Hypothesis draws sequences of commands (four accounts, both sides, prices a
few ticks around a mid so that orders cross often, every order type, time in
force and self-trade-prevention mode, cancels and amends of live, dead and
never-existing orders, cancel-all, mark-price changes that move the price
band) and feeds each command to the engine and to `tests.reference_matcher`.
After every command:

* the engine's events equal the reference's (same trades with price, qty,
  maker and taker ids and leaves, in order; same rejects; same cancels and
  expiries; same amends);
* the engine's book equals the reference's, order by order;
* the book is not crossed; every level's totals agree with its live orders;
  the open-order indexes agree with the book;
* for every order ever accepted, filled + open + cancelled == ordered, with
  filled, cancelled and ordered added up from the events alone;
* within every price level the live orders are in the order in which they
  were accepted or last lost priority (known from the events' seq);
* seq is consecutive over the run, symbol_seq consecutive per symbol;
* no trade is a self-trade unless the taker's STP mode is NONE.

Size of the run: MAX_EXAMPLES (200) sequences of at least MIN_COMMANDS (100)
commands: at least 20,000 commands; `test_engine_agrees_with_reference`
counts them and fails below 10,000. Derandomized and without an example
database, so every run tests the same sequences.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.commands import AmendOrder, CancelAll, CancelOrder, PlaceOrder, SetMarkPrice
from exchange.engine import Engine
from exchange.enums import CancelReason, OrderType, RejectReason, SelfTradePrevention, Side, TimeInForce
from exchange.events import (
    Event,
    MarkPriceUpdated,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderRejected,
    Trade,
)
from exchange.instrument import Instrument, btcusdt, ethusdt
from tests.reference_matcher import ReferenceMatcher

MAX_EXAMPLES = 200
MIN_COMMANDS = 100
MAX_COMMANDS = 150
REQUIRED_COMMANDS = 10_000

BTC, ETH, NOSUCH = "BTCUSDT", "ETHUSDT", "DOGEUSDT"


def instruments() -> list[Instrument]:
    # Small open-order limits so that MAX_OPEN_ORDERS happens; ETH with min qty above its step so
    # that QTY_BELOW_MIN happens.
    return [
        msgspec.structs.replace(btcusdt(), max_open_orders=12),
        msgspec.structs.replace(ethusdt(), max_open_orders=5, min_qty="0.015"),
    ]


MID = {BTC: 800_000, ETH: 300_000}  # ticks: 80,000.0 and 3,000.00
LOT_SCALE = {BTC: 1, ETH: 10}  # ETH lots are worth far less: scale them so most orders pass min notional
FAR = {BTC: 60_000, ETH: 22_500}  # 7.5 % of the mid: outside the 5 % band once a mark is set

# Weighted by repetition; hypothesis shrinks towards the first entry.
PRICE_CHOICES: list[int | str] = [
    0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, 8, 1, -1, 2, -2, 3, -3, 4, -4, 5, 6, 1, 2, 3,
    "far_low", "far_high", "zero", "below_min", "above_max",
]  # ticks from the mid towards the other side (buy: up, sell: down), so that orders cross often
QTY_CHOICES: list[int | str] = [3, 1, 2, 4, 5, 6, 7, 8, 10, 12, 2, 3, 4, 5, 2, 3, 20, 40, "zero", "negative", "huge"]
FOK_QTY_CHOICES = [2, 3, 4, 2, 6]  # a FOK order is drawn small so that it often can fill
TIFS = [TimeInForce.GTC] * 5 + [TimeInForce.IOC, TimeInForce.FOK, TimeInForce.FOK, TimeInForce.GTX]
STPS = list(SelfTradePrevention)
CLIENT_IDS = [""] * 10 + ["a", "b", "c", "a", "b", "bad id!"]
SYMBOLS = [BTC] * 14 + [ETH] * 5 + [NOSUCH]
KINDS = ["limit"] * 24 + ["market"] * 3 + ["cancel"] * 5 + ["amend"] * 8 + ["cancel_all", "mark"]
# cancel/amend: which order (a live one, the n-th latest; one that is no longer open; one that never was)
TARGETS = ["live", "live", "live", "live", "live", "dead", "never"]
# cancel/amend: how it is named (by order id; by client order id; by a wrong account; under the wrong symbol)
NAMINGS = ["id", "id", "id", "cid", "cid", "other_account", "other_symbol"]
AMEND_DPRICE = [0, 0, 0, 1, -1, 2, -2, 3, -3]  # ticks
AMEND_DQTY = [0, -1, -2, 0, 1, 2, -3, 4, -1, -20]  # lots (scaled)


# ---------------------------------------------------------------- drawing
# A drawn command is a small tuple of choices; it becomes an engine command only when it runs,
# because cancels and amends pick their target among the orders that exist at that moment.

# Strategies built once (a sampled_from's label is computed per instance, which is slow for long lists).
# Each field is its own draw: hypothesis does not draw a long list's index uniformly.
KIND = st.sampled_from(KINDS)
SYMBOL = st.sampled_from(SYMBOLS)
ACCOUNT = st.integers(1, 4)
SIDE = st.sampled_from([Side.BUY, Side.SELL])
PRICE = st.sampled_from(PRICE_CHOICES)
QTY = st.sampled_from(QTY_CHOICES)
FOK_QTY = st.sampled_from(FOK_QTY_CHOICES)
TIF = st.sampled_from(TIFS)
STP = st.sampled_from(STPS)
CLIENT_ID = st.sampled_from(CLIENT_IDS)
REDUCE_ONLY = st.sampled_from([False] * 7 + [True])
TARGET = st.sampled_from(TARGETS)
NAMING = st.sampled_from(NAMINGS)
NTH = st.integers(0, 30)
DPRICE = st.sampled_from(AMEND_DPRICE)
DQTY = st.sampled_from(AMEND_DQTY)
MARK_OFFSET = st.integers(-12, 12)


@st.composite
def drawn_command(draw: st.DrawFn) -> tuple:
    kind = draw(KIND)
    if kind in ("limit", "market"):
        symbol, account, side, price, tif = draw(SYMBOL), draw(ACCOUNT), draw(SIDE), draw(PRICE), draw(TIF)
        qty = draw(FOK_QTY if tif is TimeInForce.FOK else QTY)
        return (kind, symbol, account, side, price, qty, tif, draw(STP), draw(CLIENT_ID), draw(REDUCE_ONLY))
    if kind in ("cancel", "amend"):
        # which order: a live one, the n-th latest (modulo how many there are), a dead one or one that never was
        return (kind, draw(TARGET), draw(NAMING), draw(NTH), draw(DPRICE), draw(DQTY))
    if kind == "cancel_all":
        return (kind, draw(SYMBOL), draw(ACCOUNT))
    return (kind, draw(SYMBOL), draw(MARK_OFFSET))


def build(drawn: tuple, ref: ReferenceMatcher) -> object:
    """The engine command for a drawn tuple (ids resolved against the orders accepted so far)."""
    kind = drawn[0]
    if kind in ("limit", "market"):
        _, symbol, account, side, price_choice, qty_choice, tif, stp, cid, reduce_only = drawn
        base = symbol if symbol in MID else BTC
        mid, scale = MID[base], LOT_SCALE[base]
        if price_choice == "far_low":
            price = mid - FAR[base]
        elif price_choice == "far_high":
            price = mid + FAR[base]
        elif price_choice == "zero":
            price = 0
        elif price_choice == "below_min":
            price = 1
        elif price_choice == "above_max":
            price = 10**9
        else:
            price = mid + price_choice if side is Side.BUY else mid - price_choice
        if isinstance(qty_choice, int):
            qty = qty_choice * scale
        else:  # "huge" is above every maximum quantity
            qty = {"zero": 0, "negative": -scale, "huge": 10**8}[qty_choice]
        if kind == "market":
            # a MARKET order has no price; now and then one is given anyway (PRICE_NOT_ALLOWED)
            return PlaceOrder(account=account, symbol=symbol, side=side, qty=qty, order_type=OrderType.MARKET,
                              price=price if price_choice == "far_high" else 0, client_order_id=cid,
                              reduce_only=reduce_only, stp=stp)
        return PlaceOrder(account=account, symbol=symbol, side=side, qty=qty, price=price, tif=tif, stp=stp,
                          client_order_id=cid, reduce_only=reduce_only)
    if kind in ("cancel", "amend"):
        _, which, naming, nth, dprice, dqty = drawn
        live = [o for o in ref.all_orders.values() if o.open_qty]
        dead = [o for o in ref.all_orders.values() if not o.open_qty]
        pool = live if which == "live" else dead if which == "dead" else []
        if pool:
            target = pool[-1 - nth % len(pool)]
            account, symbol, order_id, cid = target.account, target.symbol, target.order_id, target.client_order_id
            price, qty = target.price, target.qty
        else:  # an order that never existed
            account, symbol, order_id, cid = 1 + nth % 4, BTC, ref.next_id + 1000, "c"
            price, qty = MID[BTC], 5
        if naming == "cid" and cid:
            order_id = 0
        else:
            cid = ""
            if naming == "other_account":
                account = account % 4 + 1
            elif naming == "other_symbol":
                symbol = ETH if symbol == BTC else BTC
        if kind == "cancel":
            return CancelOrder(account=account, symbol=symbol, order_id=order_id, client_order_id=cid)
        scale = LOT_SCALE.get(symbol, 1)
        return AmendOrder(account=account, symbol=symbol, order_id=order_id, client_order_id=cid,
                          price=price + dprice, qty=qty + dqty * scale)
    if kind == "cancel_all":
        return CancelAll(account=drawn[2], symbol=drawn[1])
    symbol, offset = drawn[1], drawn[2]
    price = 0 if offset == 12 else MID.get(symbol, MID[BTC]) + 4 * offset  # 12: an invalid mark (rejected)
    return SetMarkPrice(symbol=symbol, price=price)


# ---------------------------------------------------------------- engine-side bookkeeping
def engine_view(ev: Event) -> tuple:
    """An engine event in the reference matcher's vocabulary."""
    if isinstance(ev, OrderAccepted):
        return ("accepted", ev.order_id, ev.side, ev.order_type, ev.tif, ev.price, ev.qty)
    if isinstance(ev, OrderRejected):
        return ("rejected", ev.command, ev.reason)
    if isinstance(ev, Trade):
        return ("trade", ev.price, ev.qty, ev.maker_order_id, ev.taker_order_id, ev.taker_leaves, ev.maker_leaves)
    if isinstance(ev, OrderCanceled):
        return ("canceled", ev.order_id, ev.reason, ev.canceled_qty, ev.filled_qty)
    if isinstance(ev, OrderAmended):
        return ("amended", ev.order_id, ev.price, ev.qty, ev.leaves, ev.priority_kept)
    if isinstance(ev, MarkPriceUpdated):
        return ("mark", ev.mark_price)
    raise AssertionError(f"unexpected event {ev!r}")


@dataclass
class Ledger:
    """What the events say about every order, added up independently of the engine's state."""

    seq: int = 0
    symbol_seq: dict[str, int] = field(default_factory=dict)
    ordered: dict[int, int] = field(default_factory=dict)
    filled: dict[int, int] = field(default_factory=dict)
    cancelled: dict[int, int] = field(default_factory=dict)
    priority: dict[int, int] = field(default_factory=dict)  # seq of acceptance or of the last priority loss
    account: dict[int, int] = field(default_factory=dict)
    stp: dict[int, SelfTradePrevention] = field(default_factory=dict)

    def open_qty(self, oid: int) -> int:
        return self.ordered[oid] - self.filled[oid] - self.cancelled[oid]

    def record(self, events: list[Event]) -> None:
        for ev in events:
            self.seq += 1
            assert ev.seq == self.seq, f"global seq jumped: {ev.seq} after {self.seq - 1}"
            if ev.symbol:
                self.symbol_seq[ev.symbol] = self.symbol_seq.get(ev.symbol, 0) + 1
                assert ev.symbol_seq == self.symbol_seq[ev.symbol], f"{ev.symbol} symbol_seq jumped at {ev!r}"
            else:
                assert ev.symbol_seq == 0
            if isinstance(ev, OrderAccepted):
                oid = ev.order_id
                assert oid not in self.ordered, "order id reused"
                self.ordered[oid], self.filled[oid], self.cancelled[oid] = ev.qty, 0, 0
                self.priority[oid] = ev.seq
                self.account[oid], self.stp[oid] = ev.account, ev.stp
            elif isinstance(ev, Trade):
                t, mk = ev.taker_order_id, ev.maker_order_id
                assert ev.taker_account == self.account[t] and ev.maker_account == self.account[mk]
                assert ev.qty > 0
                if ev.taker_account == ev.maker_account:
                    assert self.stp[t] is SelfTradePrevention.NONE, f"self-trade under STP {self.stp[t]}"
                self.filled[t] += ev.qty
                self.filled[mk] += ev.qty
                assert ev.taker_leaves == self.open_qty(t)
                assert ev.maker_leaves == self.open_qty(mk)
            elif isinstance(ev, OrderCanceled):
                oid = ev.order_id
                assert ev.canceled_qty > 0 and ev.status is ev.reason.status
                self.cancelled[oid] += ev.canceled_qty
                assert ev.filled_qty == self.filled[oid]
                assert self.open_qty(oid) == 0, "a cancel must take all of the open quantity"
            elif isinstance(ev, OrderAmended):
                oid = ev.order_id
                self.ordered[oid] = ev.qty
                assert ev.leaves == self.open_qty(oid) > 0
                if not ev.priority_kept:
                    self.priority[oid] = ev.seq


def engine_book(engine: Engine, symbol: str) -> list[tuple]:
    return [(o.order_id, o.account, o.side, o.price, o.leaves) for o in engine.market(symbol).book.resting()]


def reference_book(ref: ReferenceMatcher, symbol: str) -> list[tuple]:
    return [(o.order_id, o.account, o.side, o.price, o.open_qty)
            for side in (Side.BUY, Side.SELL) for o in ref.resting(symbol, side)]


def check_engine_invariants(engine: Engine, ledger: Ledger) -> None:
    resting: dict[int, int] = {}
    for symbol, m in engine.markets.items():
        book = m.book
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, f"{symbol} book crossed: {bid} >= {ask}"
        for book_side in (book.bids, book.asks):
            assert sorted(book_side.levels) == list(book_side.prices), "level index out of step with prices"
            for level in book_side.by_priority():
                live = list(level.live())
                assert live, f"{symbol} empty level {level.price} left in the book"
                assert level.count == len(live) and level.qty == sum(o.leaves for o in live)
                prios = [ledger.priority[o.order_id] for o in live]
                assert prios == sorted(prios), f"{symbol} level {level.price} breaks FIFO: {prios}"
                for o in live:
                    assert o.price == level.price and o.symbol == symbol
                    assert (o.side is Side.BUY) == book_side.is_bid
                    resting[o.order_id] = o.leaves
        by_account = {oid for orders in m.open_by_account.values() for oid in orders}
        assert by_account == {o.order_id for o in book.resting()}
    assert set(engine.orders) == set(resting), "open-order index disagrees with the book"
    assert {(o.account, o.client_order_id) for o in engine.orders.values() if o.client_order_id} == set(
        engine.client_orders)
    for oid, ordered in ledger.ordered.items():
        assert ordered == ledger.filled[oid] + resting.get(oid, 0) + ledger.cancelled[oid], (
            f"order {oid}: ordered {ordered} != filled {ledger.filled[oid]} + open {resting.get(oid, 0)}"
            f" + cancelled {ledger.cancelled[oid]}")


# ---------------------------------------------------------------- the property
COMMANDS_RUN = 0
SEEN: Counter = Counter()


def note_coverage(cmd: object, views: list[tuple], ref: ReferenceMatcher) -> None:
    for v in views:
        if v[0] in ("rejected", "canceled"):
            SEEN[v[2]] += 1
        elif v[0] == "amended":
            SEEN["amend kept priority" if v[5] else "amend lost priority"] += 1
        else:
            SEEN[v[0]] += 1
    if isinstance(cmd, PlaceOrder) and views[0][0] == "accepted":
        # the situations self-trade prevention is about: an order meeting its own account's order
        if any(v[0] == "canceled" and v[2] is CancelReason.SELF_TRADE for v in views):
            SEEN[f"STP {cmd.stp} expired an order"] += 1
            if cmd.tif is TimeInForce.FOK:
                SEEN["a FOK order filled past its own order"] += 1
        if cmd.stp is SelfTradePrevention.NONE and any(
                v[0] == "trade" and ref.all_orders[v[3]].account == cmd.account for v in views):
            SEEN["STP NONE self-trade"] += 1
    if (isinstance(cmd, PlaceOrder) and views[0][0] == "rejected"
            and views[0][2] is RejectReason.COUNTERPARTY_PRICE_OUTSIDE_BAND):
        bound = ref._market_limit(ref.symbols[cmd.symbol], cmd.side)
        assert bound is not None
        if any(o.symbol == cmd.symbol and o.side != cmd.side and (o.price <= bound if cmd.side is Side.BUY
                                                                   else o.price >= bound) for o in ref.book):
            SEEN["a market order refused though its best price was inside the band (it would sweep past)"] += 1


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(drawn_command(), min_size=MIN_COMMANDS, max_size=MAX_COMMANDS))
def check_random_sequence(drawn: list[tuple]) -> None:
    global COMMANDS_RUN
    engine = Engine(instruments())
    ref = ReferenceMatcher(instruments())
    ledger = Ledger()
    for i, d in enumerate(drawn):
        cmd = build(d, ref)
        events = engine.apply(cmd)
        got = [engine_view(ev) for ev in events]
        want = ref.apply(cmd)
        assert got == want, f"command {i}: {cmd!r}\nengine:    {got}\nreference: {want}"
        ledger.record(events)
        for symbol in (BTC, ETH):
            assert engine_book(engine, symbol) == reference_book(ref, symbol), f"book differs after {i}: {cmd!r}"
        check_engine_invariants(engine, ledger)
        note_coverage(cmd, got, ref)
    COMMANDS_RUN += len(drawn)


def test_engine_agrees_with_reference() -> None:
    before = COMMANDS_RUN
    check_random_sequence()
    ran = COMMANDS_RUN - before
    assert ran >= REQUIRED_COMMANDS, f"only {ran} commands were run"
    # The generator must actually reach the situations the property is about.
    must_see = [
        "trade", "accepted", "mark", "amend kept priority", "amend lost priority", *GENERATED_REASONS,
        "USER", "IOC_REMAINDER", "SELF_TRADE", "STP EXPIRE_TAKER expired an order", "STP EXPIRE_MAKER expired an order",
        "STP EXPIRE_BOTH expired an order", "STP NONE self-trade", "a FOK order filled past its own order",
        "a market order refused though its best price was inside the band (it would sweep past)",
    ]
    missing = [k for k in must_see if SEEN[k] == 0]
    assert not missing, f"the random commands never produced {missing}"


# Every reject the order path can give a well-typed command (MALFORMED, the INVALID_* of the enums and the
# off-grid reasons of the decimal edge are tested in test_orders.py).
GENERATED_REASONS = [
    RejectReason.UNKNOWN_SYMBOL, RejectReason.PRICE_REQUIRED, RejectReason.PRICE_NOT_ALLOWED,
    RejectReason.PRICE_BELOW_MIN, RejectReason.PRICE_ABOVE_MAX, RejectReason.PRICE_ABOVE_BAND,
    RejectReason.PRICE_BELOW_BAND, RejectReason.QTY_NOT_POSITIVE, RejectReason.QTY_BELOW_MIN,
    RejectReason.QTY_ABOVE_MAX, RejectReason.MIN_NOTIONAL, RejectReason.INVALID_CLIENT_ORDER_ID,
    RejectReason.DUPLICATE_CLIENT_ORDER_ID, RejectReason.POST_ONLY_WOULD_TAKE, RejectReason.FOK_CANNOT_FILL,
    RejectReason.UNKNOWN_ORDER, RejectReason.AMEND_QTY_BELOW_FILLED, RejectReason.AMEND_NO_CHANGE,
    RejectReason.MAX_OPEN_ORDERS, RejectReason.COUNTERPARTY_PRICE_OUTSIDE_BAND,
]
