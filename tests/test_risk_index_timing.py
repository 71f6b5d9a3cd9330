"""When the risk monitor re-indexes must not change what the exchange does.

A command marks the accounts it touched stale and checks their units exactly at
once; the next mark tick re-indexes each stale account once
(`RiskMonitor.touch` / `RiskMonitor.refresh`, liquidation/monitor.py). So the
index may lag the accounts between ticks, and nothing may read it then. This
test drives the same seeded flows through two full exchanges, one as it runs
and one that re-indexes after every command (eagerly), and requires the same
events, byte for byte: any path that reads a stale index entry (a tick, a
liquidation, an ADL ranking, a margin call) would make them differ. The flows
mix one-way and hedge accounts, cross and isolated margin, auto margin
addition, margin added and removed, deposits, and mark moves of up to 1 % a
command, so that margin calls, liquidations (partial and full) and ADL occur.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from exchange.assembly import build_exchange
from exchange.commands import (
    AdjustIsolatedMargin,
    AdvanceClock,
    CancelOrder,
    Command,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    SetPositionMode,
)
from exchange.engine import Engine
from exchange.enums import MarginMode, OrderType, PositionMode, PositionSide, Side
from exchange.events import AdlExecuted, Event, LiquidationRecorded, MarginCall, encode_events

USDT = 10**8  # atoms per USDT
#: (symbol, mid price in ticks, min and max order qty in lots)
SYMBOLS = (("BTCUSDT", 800_000, 2, 60), ("ETHUSDT", 300_000, 7, 300))
ACCOUNTS = 30


def flow(seed: int, n: int) -> Iterator[Command]:
    """Set-up (deposits, modes, leverage), then `n` random commands."""
    rnd = random.Random(seed)
    mids = {s: m for s, m, _, _ in SYMBOLS}
    for s, m, _, _ in SYMBOLS:
        yield SetMarkPrice(symbol=s, price=m)
    hedge = {a for a in range(1, ACCOUNTS + 1) if a % 5 == 0}
    for a in range(1, ACCOUNTS + 1):
        yield Deposit(account=a, asset="USDT", amount=rnd.choice([500, 2_000, 10_000, 1_000_000]) * USDT)
        if a in hedge:
            yield SetPositionMode(account=a, position_mode=PositionMode.HEDGE)
        for s, *_ in SYMBOLS:
            yield SetLeverage(account=a, symbol=s, leverage=rnd.choice([5, 10, 20, 50]))
            if a % 3 == 0:
                yield SetMarginMode(account=a, symbol=s, margin_mode=MarginMode.ISOLATED)
    resting: list[tuple[int, str, str]] = []
    ts = 0
    for i in range(n):
        s, _, lo, hi = SYMBOLS[rnd.random() < 0.3]
        mid = mids[s]
        a = rnd.randint(1, ACCOUNTS)
        side = Side.BUY if rnd.random() < 0.5 else Side.SELL
        ps = rnd.choice([PositionSide.LONG, PositionSide.SHORT]) if a in hedge else PositionSide.BOTH
        r = rnd.random()
        if r < 0.45:
            cid = f"o{i}"
            resting.append((a, s, cid))
            off = rnd.randint(1, 30)
            yield PlaceOrder(account=a, symbol=s, side=side, qty=rnd.randint(lo, hi), position_side=ps,
                             price=mid - off if side is Side.BUY else mid + off, client_order_id=cid)
        elif r < 0.65:
            yield PlaceOrder(account=a, symbol=s, side=side, qty=rnd.randint(lo, hi), position_side=ps,
                             order_type=OrderType.MARKET)
        elif r < 0.85 and resting:
            a2, s2, cid = resting.pop(rnd.randrange(len(resting)))
            yield CancelOrder(account=a2, symbol=s2, client_order_id=cid)
        elif r < 0.88:
            yield AdjustIsolatedMargin(account=a, symbol=s, amount=rnd.randint(-50, 200) * USDT, position_side=ps)
        elif r < 0.90:
            yield SetAutoMarginAddition(account=a, symbol=s, enabled=True, position_side=ps)
        elif r < 0.97:
            mids[s] = mid + rnd.randint(-mid // 100, mid // 100)
            yield SetMarkPrice(symbol=s, price=mids[s])
        else:
            yield Deposit(account=a, asset="USDT", amount=rnd.randint(100, 5_000) * USDT)
        if i % 50 == 49:
            ts += rnd.randint(100, 2_000)
            yield AdvanceClock(ts=ts)


def exchange() -> Engine:
    return build_exchange(insurance_fund={"USDT": 100 * USDT})  # a small fund: ADL comes into play


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reindexing_after_every_command_changes_no_event(seed: int) -> None:
    lazy, eager = exchange(), exchange()
    assert lazy.risk is not None and eager.risk is not None
    monitor = eager.risk.monitor  # type: ignore[attr-defined]
    kinds: set[type[Event]] = set()
    for n, cmd in enumerate(flow(seed, 4_000)):
        got = lazy.apply(cmd)
        want = eager.apply(cmd)
        monitor.refresh()  # eager: the index never lags the accounts
        assert encode_events(got) == encode_events(want), f"command {n}: {cmd}"
        kinds.update(type(ev) for ev in got)
    # the flow reaches what the index decides: margin calls, liquidations, ADL
    assert {MarginCall, LiquidationRecorded, AdlExecuted} <= kinds
