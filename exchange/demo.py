"""A short built-in demo: a few accounts place orders, and the trades and the book are printed."""

from __future__ import annotations

from exchange.commands import AmendOrder, CancelOrder, PlaceOrder
from exchange.engine import Engine
from exchange.enums import OrderType, Side, TimeInForce
from exchange.events import Event, OrderAccepted, OrderAmended, OrderCanceled, OrderRejected, Trade
from exchange.instrument import Instrument


def demo_commands(ins: Instrument) -> list:
    """Makers quote around 80,000, a taker sweeps, one amend, one cancel, two rejects."""
    p, q = ins.price_ticks, ins.qty_lots
    cmds = []
    for i, (bid, ask) in enumerate([("79999.90", "80000.10"), ("79999.00", "80001.00"), ("79998.00", "80002.00")]):
        cmds.append(PlaceOrder(account=1, symbol=ins.symbol, side=Side.BUY, price=p(bid), qty=q("0.250"),
                               client_order_id=f"mm-bid-{i}"))
        cmds.append(PlaceOrder(account=1, symbol=ins.symbol, side=Side.SELL, price=p(ask), qty=q("0.250"),
                               client_order_id=f"mm-ask-{i}"))
    cmds += [
        PlaceOrder(account=2, symbol=ins.symbol, side=Side.BUY, order_type=OrderType.MARKET, qty=q("0.400")),
        AmendOrder(account=1, symbol=ins.symbol, client_order_id="mm-bid-0", price=p("79999.90"), qty=q("0.100")),
        PlaceOrder(account=3, symbol=ins.symbol, side=Side.SELL, price=p("79999.00"), qty=q("0.300"),
                   tif=TimeInForce.IOC),
        CancelOrder(account=1, symbol=ins.symbol, client_order_id="mm-ask-2"),
        PlaceOrder(account=3, symbol=ins.symbol, side=Side.SELL, price=p("79998.00"), qty=q("0.100"),
                   tif=TimeInForce.GTX),
        PlaceOrder(account=3, symbol=ins.symbol, side=Side.BUY, price=p("80000.00"), qty=q("0.001")),
    ]
    return cmds


def describe(ins: Instrument, ev: Event) -> str:
    if isinstance(ev, Trade):
        return (f"TRADE    #{ev.trade_id} {ins.qty_str(ev.qty)} @ {ins.price_str(ev.price)}  "
                f"taker {ev.taker_side.value} acct {ev.taker_account} / maker acct {ev.maker_account}")
    if isinstance(ev, OrderAccepted):
        price = ins.price_str(ev.price) if ev.price else "market"
        return (f"ACCEPTED order {ev.order_id} acct {ev.account} {ev.side.value} "
                f"{ins.qty_str(ev.qty)} @ {price} {ev.tif.value}")
    if isinstance(ev, OrderCanceled):
        return f"{ev.status.value:<8} order {ev.order_id} ({ev.reason.value}) {ins.qty_str(ev.canceled_qty)} unfilled"
    if isinstance(ev, OrderAmended):
        kept = "keeps" if ev.priority_kept else "loses"
        return f"AMENDED  order {ev.order_id} now {ins.qty_str(ev.qty)} @ {ins.price_str(ev.price)} ({kept} priority)"
    if isinstance(ev, OrderRejected):
        return f"REJECTED {ev.command} acct {ev.account}: {ev.reason.value} (Binance {ev.reason.binance_code})"
    return repr(ev)


def run_demo() -> int:
    engine = Engine()
    ins = engine.market("BTCUSDT").instrument
    print(f"{ins.symbol}: tick {ins.tick_size}, step {ins.step_size}, min notional {ins.min_notional} USDT\n")
    for cmd in demo_commands(ins):
        for ev in engine.apply(cmd):
            print(f"[seq {ev.seq:>3}] {describe(ins, ev)}")
    book = engine.market("BTCUSDT").book
    print("\nBook (best first):")
    print(f"{'bids':>24} | {'asks':<24}")
    bids, asks = book.depth(Side.BUY, 5), book.depth(Side.SELL, 5)
    for i in range(max(len(bids), len(asks))):
        b = f"{ins.qty_str(bids[i][1])} @ {ins.price_str(bids[i][0])}" if i < len(bids) else ""
        a = f"{ins.qty_str(asks[i][1])} @ {ins.price_str(asks[i][0])}" if i < len(asks) else ""
        print(f"{b:>24} | {a:<24}")
    return 0
