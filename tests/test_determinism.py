"""Determinism: the same commands give the same events, byte for byte.

A 100,000-command stream is generated from `random.Random(SEED)` (never the
global generator) and fed to two fresh engines; their events must encode
(`exchange.events.encode_events`) to identical bytes, and decode back
(`decode_events`) to equal events. The stream is also replayed in a
subprocess with a different PYTHONHASHSEED, so that an iteration over a set
or a str-keyed hash order in the engine would show up as a difference.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from exchange.commands import AdvanceClock, AmendOrder, CancelAll, CancelOrder, Command, PlaceOrder, SetMarkPrice
from exchange.engine import Engine
from exchange.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from exchange.events import Event, decode_events, encode_events

SEED = 20_240_601
COMMANDS = 100_000
SUBPROCESS_COMMANDS = COMMANDS

SYMBOLS = ["BTCUSDT"] * 20 + ["ETHUSDT"] * 9 + ["XRPUSDT"]  # XRPUSDT is not listed: its commands are rejected
MID = {"BTCUSDT": 800_000, "ETHUSDT": 300_000, "XRPUSDT": 5_000}
SCALE = {"BTCUSDT": 1, "ETHUSDT": 10, "XRPUSDT": 1}
TIFS = [TimeInForce.GTC] * 5 + [TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTX]
STPS = list(SelfTradePrevention)


def command_stream(seed: int, n: int) -> list[Command]:
    """`n` commands: mostly orders around a mid, with cancels, amends, cancel-alls, marks and clock steps.

    The stream is fixed before any engine sees it. Cancels and amends name recent orders by the
    client order ids the stream gave them (found while those orders are open), or by a guessed order id.
    """
    rng = random.Random(seed)
    out: list[Command] = []
    recent: list[tuple[int, str, str, int]] = []  # (account, symbol, client order id, price) of recent orders
    placed = 0
    now = 0
    for _ in range(n):
        r = rng.random()
        symbol = rng.choice(SYMBOLS)
        account = rng.randint(1, 8)
        if r < 0.62:
            placed += 1
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            offset = rng.randint(-12, 6)  # towards the other side: some orders cross, many rest
            price = MID[symbol] + (offset if side is Side.BUY else -offset)
            qty = rng.choice([1, 2, 3, 4, 5, 8, 13, 21]) * SCALE[symbol]
            cid = f"o{placed}" if rng.random() < 0.7 else rng.choice(["", "", "dup"])
            if cid:
                recent = [*recent[-63:], (account, symbol, cid, price)]
            if rng.random() < 0.1:
                out.append(PlaceOrder(account=account, symbol=symbol, side=side, qty=qty, order_type=OrderType.MARKET,
                                      stp=rng.choice(STPS), client_order_id=cid))
            else:
                out.append(PlaceOrder(account=account, symbol=symbol, side=side, qty=qty, price=price,
                                      tif=rng.choice(TIFS), stp=rng.choice(STPS), client_order_id=cid,
                                      reduce_only=rng.random() < 0.05))
        elif r < 0.95:
            by_cid = recent and rng.random() < 0.8
            if by_cid:
                account, symbol, cid, price = recent[-rng.randint(1, min(12, len(recent)))]
                order_id = 0
            else:
                cid, price, order_id = "", MID[symbol], rng.randint(max(1, placed - 40), placed + 2)
            if r < 0.77:
                out.append(CancelOrder(account=account, symbol=symbol, order_id=order_id, client_order_id=cid))
            else:
                out.append(AmendOrder(account=account, symbol=symbol, order_id=order_id, client_order_id=cid,
                                      price=price + rng.randint(-4, 4), qty=rng.randint(1, 15) * SCALE[symbol]))
        elif r < 0.97:
            out.append(CancelAll(account=account, symbol=symbol))
        elif r < 0.985:
            out.append(SetMarkPrice(symbol=symbol, price=MID[symbol] + rng.randint(-40, 40)))
        else:
            now += rng.randint(0, 1_500)
            out.append(AdvanceClock(ts=now))
    return out


def run(commands: list[Command]) -> list[Event]:
    engine = Engine()
    events: list[Event] = []
    for cmd in commands:
        events.extend(engine.apply(cmd))
    return events


def test_same_commands_give_byte_identical_events() -> None:
    commands = command_stream(SEED, COMMANDS)
    assert len(commands) == COMMANDS
    assert command_stream(SEED, 1_000) == commands[:1_000]  # the stream itself is reproducible
    first = run(commands)
    second = run(commands)
    data = encode_events(first)
    assert data == encode_events(second)
    # the stream exercises the matcher, not just its rejects
    kinds = Counter(type(e).__name__ for e in first)
    for kind, at_least in [("OrderAccepted", 20_000), ("Trade", 10_000), ("OrderCanceled", 10_000),
                           ("OrderAmended", 3_000), ("OrderRejected", 10_000), ("MarkPriceUpdated", 500)]:
        assert kinds[kind] >= at_least, (kind, kinds[kind])
    # seq is consecutive over the whole run
    assert [e.seq for e in first[:: 997]] == list(range(1, len(first) + 1, 997))
    assert first[-1].seq == len(first)
    # events round-trip through their JSON form
    decoded = decode_events(data)
    assert decoded == first
    assert [type(e) for e in decoded] == [type(e) for e in first]
    assert encode_events(decoded) == data


def test_a_different_seed_gives_a_different_stream() -> None:
    # guards against a generator that ignores its seed (which would make the test above vacuous)
    a = encode_events(run(command_stream(SEED, 2_000)))
    b = encode_events(run(command_stream(SEED + 1, 2_000)))
    assert a != b


_CHILD = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.test_determinism import SEED, command_stream, run
from exchange.events import encode_events
print(hashlib.sha256(encode_events(run(command_stream(SEED, {n})))).hexdigest())
"""


def test_events_do_not_depend_on_the_hash_seed() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    expected = hashlib.sha256(encode_events(run(command_stream(SEED, SUBPROCESS_COMMANDS)))).hexdigest()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", _CHILD.format(root=root, n=SUBPROCESS_COMMANDS)],
                           env=env, capture_output=True, text=True, timeout=120, check=True)
    assert child.stdout.strip() == expected
