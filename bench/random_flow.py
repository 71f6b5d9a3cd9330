"""A seeded random order flow through the real engine, for the runtime's tests and benchmarks.

Makers quote around a slowly drifting mid on BTCUSDT and ETHUSDT, takers
cross with IOC and market orders, some orders are cancelled or amended, and
virtual time moves forward every few dozen commands. Everything comes from
`random.Random(seed)`, so a seed always gives the same commands, and the
engine always the same events (about 1.4 events per command).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from exchange.commands import AdvanceClock, AmendOrder, CancelOrder, Command, PlaceOrder, SetMarkPrice
from exchange.enums import OrderType, Side, TimeInForce

#: (symbol, mid price in ticks, min qty in lots (above min notional), max qty in lots)
SYMBOLS = (("BTCUSDT", 800_000, 2, 60), ("ETHUSDT", 300_000, 7, 300))


def random_flow(seed: int, n: int, *, accounts: int = 20, clock_every: int = 50,
                max_resting: int = 1500) -> Iterator[Command]:
    """`n` order commands (plus the AdvanceClock and initial SetMarkPrice ones) from `seed`."""
    rnd = random.Random(seed)
    mids = {s: m for s, m, _lo, _hi in SYMBOLS}
    for s, m, _lo, _hi in SYMBOLS:
        yield SetMarkPrice(symbol=s, price=m)
    ts = 0
    resting: list[tuple[int, str, str]] = []  # (account, symbol, client order id) of orders that may rest
    buy, sell = Side.BUY, Side.SELL
    for i in range(n):
        s, _m, lo, hi = SYMBOLS[rnd.random() < 0.3]
        mid = mids[s]
        r = rnd.random()
        side = buy if rnd.random() < 0.5 else sell
        acc = rnd.randint(1, accounts)
        if len(resting) > max_resting and r < 0.6:
            r = 0.8  # too much resting: cancel instead
        if r < 0.52:
            off = rnd.randint(1, 30)
            cid = f"o{i}"
            resting.append((acc, s, cid))
            yield PlaceOrder(account=acc, symbol=s, side=side, qty=rnd.randint(lo, hi),
                             price=mid - off if side is buy else mid + off, client_order_id=cid)
        elif r < 0.66:
            off = rnd.randint(0, 10)
            yield PlaceOrder(account=acc, symbol=s, side=side, qty=rnd.randint(lo, hi),
                             price=mid + off if side is buy else mid - off, tif=TimeInForce.IOC)
        elif r < 0.72:
            yield PlaceOrder(account=acc, symbol=s, side=side, qty=rnd.randint(lo, hi), order_type=OrderType.MARKET)
        elif r < 0.95 and resting:
            a, s2, cid = resting.pop(rnd.randrange(len(resting)))
            yield CancelOrder(account=a, symbol=s2, client_order_id=cid)
        elif resting:
            a, s2, cid = resting[rnd.randrange(len(resting))]
            _s, _m2, lo2, hi2 = SYMBOLS[s2 == "ETHUSDT"]
            yield AmendOrder(account=a, symbol=s2, client_order_id=cid, qty=rnd.randint(lo2, hi2),
                             price=mids[s2] + rnd.randint(-30, 30))
        else:
            yield PlaceOrder(account=acc, symbol=s, side=side, qty=rnd.randint(lo, hi), order_type=OrderType.MARKET)
        if rnd.random() < 0.02:
            mids[s] = mid + rnd.randint(-3, 3)
        if i % clock_every == clock_every - 1:
            ts += rnd.randint(1, 20)
            yield AdvanceClock(ts=ts)


def flow_for_events(seed: int, events: int, **kw: object) -> list[Command]:
    """Commands of `random_flow(seed)` just enough for the engine to produce at least `events` events."""
    from exchange.engine import Engine

    engine = Engine()
    out: list[Command] = []
    total = 0
    for cmd in random_flow(seed, 10 * events, **kw):  # type: ignore[arg-type]
        out.append(cmd)
        total += len(engine.apply(cmd))
        if total >= events:
            break
    return out
