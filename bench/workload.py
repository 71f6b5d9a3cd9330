"""Seeded order-flow workloads for the matching benchmark, and their text format.

A workload is a list of operations on one symbol. The text form has one
operation a line, five integers separated by spaces:

    <type> <oid> <side> <price> <qty>

    type   0 passive limit (GTC, never crosses when sent)
           3 crossing limit (GTC, takes 2-5 levels; a remainder may rest)
           2 market (takes 2-5 levels)
           1 cancel of a resting order (side, price and qty are the order's)
    oid    the workload's own order number, 1, 2, 3 ... in order of placement;
           a cancel repeats the oid of the order it cancels
    side   0 buy, 1 sell
    price  ticks (0 for a market order)
    qty    lots

The generator replays its own flow through an exact model of the book (price
then time priority, and the engine's default self-trade prevention,
EXPIRE_TAKER, with account = oid % ACCOUNTS + 1), so it knows which orders
rest after every operation: a cancel always names an order that is still
resting, a passive limit never crosses, and an aggressive order is sized to
trade at exactly k levels (unless self-trade prevention stops it first). The
engine should therefore answer every command of a generated workload without
a reject; the benchmark checks that.

Randomness comes only from `random.Random(seed)`: the same shape, size and
seed always give the same operations.
"""

from __future__ import annotations

import random
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sortedcontainers import SortedList

PASSIVE, CANCEL, MARKET, CROSSING = 0, 1, 2, 3
BUY, SELL = 0, 1

#: Accounts the orders are spread over: account = oid % ACCOUNTS + 1.
ACCOUNTS = 64

#: 80,000.00 USDT at BTCUSDT's tick of 0.10.
START_MID = 800_000


def account_of(oid: int) -> int:
    return oid % ACCOUNTS + 1


@dataclass(frozen=True)
class Shape:
    """The knobs of one kind of flow. The op mix is the same for every shape."""

    name: str
    offset_max: int  # a passive limit is priced 1..offset_max ticks away from the mid
    qty_min: int  # passive size, lots (2 lots at 80,000 = 160 USDT ≥ the 100 USDT minimum)
    qty_max: int
    sweep_levels: tuple[int, ...] = (2, 3, 4, 5)  # k: how many price levels an aggressive order trades at
    sweep_weights: tuple[int, ...] = (6, 2, 1, 1)  # 60% two levels ... 10% five (mean 2.7)
    p_passive: float = 0.60
    p_cancel: float = 0.25  # the rest (0.15) is aggressive
    p_market: float = 0.5  # share of aggressive orders sent as MARKET (the others are crossing limits)
    p_rest: float = 0.5  # share of crossing limits sized to leave a remainder resting
    drift: float = 0.05  # chance per operation that the mid moves one tick (up or down)


SHAPES: dict[str, Shape] = {
    # A thin, busy top of book: quotes within 5 USDT (50 ticks) of the mid. The
    # mix pins the top of the book near 1.5 orders a level, so it holds about
    # 70 orders on about 40 levels (from a handful to ~200 as it swings).
    "shallow": Shape("shallow", offset_max=50, qty_min=2, qty_max=50, sweep_weights=(6, 2, 1, 1)),
    # The same mix with quotes spread over 30 USDT (300 ticks) each side: about
    # 2,000-2,500 orders rest (never fewer than ~1,500 after warm-up), 6-7 a level.
    "deep": Shape("deep", offset_max=300, qty_min=2, qty_max=50, sweep_weights=(6, 2, 1, 1)),
}


class Workload:
    """Operations as five parallel integer columns (compact: a million ops take 14 MB, not ~150 MB of tuples)."""

    __slots__ = ("types", "oids", "sides", "prices", "qtys", "stats", "_max_oid")

    def __init__(self) -> None:
        self.stats: dict[str, float] = {}  # what the generator saw (empty for a workload read from a file)
        self.types = array("b")
        self.oids = array("i")
        self.sides = array("b")
        self.prices = array("i")
        self.qtys = array("i")
        self._max_oid: int | None = None

    def append(self, typ: int, oid: int, side: int, price: int, qty: int) -> None:
        self.types.append(typ)
        self.oids.append(oid)
        self.sides.append(side)
        self.prices.append(price)
        self.qtys.append(qty)
        self._max_oid = None

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator[tuple[int, int, int, int, int]]:
        return zip(self.types, self.oids, self.sides, self.prices, self.qtys, strict=True)

    def max_oid(self) -> int:
        if self._max_oid is None:  # a pass over the column: done once, before any timing
            self._max_oid = max(self.oids, default=0)
        return self._max_oid

    def mix(self) -> dict[str, float]:
        """Share of each operation type."""
        n = len(self) or 1
        counts = [0, 0, 0, 0]
        for t in self.types:
            counts[t] += 1
        return {"passive": counts[PASSIVE] / n, "cancel": counts[CANCEL] / n,
                "market": counts[MARKET] / n, "crossing": counts[CROSSING] / n}


# ---------------------------------------------------------------- file format
def write_workload(workload: Workload, path: str | Path) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.writelines(f"{t} {o} {s} {p} {q}\n" for t, o, s, p, q in workload)


def read_workload(path: str | Path) -> Workload:
    w = Workload()
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ValueError(f"{path}:{n}: expected 5 fields, got {len(parts)}")
            t, o, s, p, q = map(int, parts)
            if t not in (PASSIVE, CANCEL, MARKET, CROSSING) or s not in (BUY, SELL) or (t == MARKET) != (p == 0):
                raise ValueError(f"{path}:{n}: bad type, side or price: {line.strip()}")
            w.append(t, o, s, p, q)
    return w


# ---------------------------------------------------------------- the model
class _Book:
    """An exact model of the book, for the generator only (eager removal, simple rather than fast)."""

    def __init__(self) -> None:
        self.levels: tuple[dict[int, deque[int]], dict[int, deque[int]]] = ({}, {})  # price -> oids, oldest first
        self.level_qty: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.prices = (SortedList(), SortedList())
        self.orders: dict[int, list[int]] = {}  # oid -> [side, price, qty, leaves]
        self.resting: list[int] = []  # for a uniform random pick; swap-remove via `pos`
        self.pos: dict[int, int] = {}
        self.open_by_account = [0] * (ACCOUNTS + 1)
        self.max_open = 0  # most orders one account ever had open (the engine allows 200)

    def best(self, side: int) -> int | None:
        prices = self.prices[side]
        if not prices:
            return None
        return prices[-1] if side == BUY else prices[0]

    def top_levels(self, side: int, k: int) -> list[tuple[int, int]]:
        """(price, qty) of the best `k` levels of `side`."""
        prices = self.prices[side]
        chosen = list(prices.islice(max(0, len(prices) - k), len(prices)))[::-1] if side == BUY else list(
            prices.islice(0, k))
        return [(p, self.level_qty[side][p]) for p in chosen]

    def add(self, oid: int, side: int, price: int, qty: int, leaves: int) -> None:
        level = self.levels[side].get(price)
        if level is None:
            level = self.levels[side][price] = deque()
            self.level_qty[side][price] = 0
            self.prices[side].add(price)
        level.append(oid)
        self.level_qty[side][price] += leaves
        self.orders[oid] = [side, price, qty, leaves]
        self.pos[oid] = len(self.resting)
        self.resting.append(oid)
        a = account_of(oid)
        self.open_by_account[a] += 1
        self.max_open = max(self.max_open, self.open_by_account[a])

    def _forget(self, oid: int) -> None:
        del self.orders[oid]
        self.open_by_account[account_of(oid)] -= 1
        i = self.pos.pop(oid)
        last = self.resting.pop()
        if last != oid:
            self.resting[i] = last
            self.pos[last] = i

    def _drop_level_if_empty(self, side: int, price: int) -> None:
        if not self.levels[side][price]:
            del self.levels[side][price]
            del self.level_qty[side][price]
            self.prices[side].remove(price)

    def cancel(self, oid: int) -> None:
        side, price, _qty, leaves = self.orders[oid]
        self.levels[side][price].remove(oid)
        self.level_qty[side][price] -= leaves
        self._drop_level_if_empty(side, price)
        self._forget(oid)

    def take(self, oid: int, side: int, limit: int | None, qty: int) -> tuple[int, bool]:
        """Match an incoming order; return (qty left, expired by self-trade prevention)."""
        opp = 1 - side
        prices = self.prices[opp]
        account = account_of(oid)
        while qty and prices:
            price = prices[0] if side == BUY else prices[-1]
            if limit is not None and (price > limit if side == BUY else price < limit):
                break
            level = self.levels[opp][price]
            while qty and level:
                maker = level[0]
                if account_of(maker) == account:  # EXPIRE_TAKER: the taker's remainder expires
                    return qty, True
                rec = self.orders[maker]
                fill = min(qty, rec[3])
                qty -= fill
                rec[3] -= fill
                self.level_qty[opp][price] -= fill
                if not rec[3]:
                    level.popleft()
                    self._forget(maker)
            self._drop_level_if_empty(opp, price)
        return qty, False


# ---------------------------------------------------------------- generator
def generate(shape: str | Shape = "shallow", n: int = 1_000_000, seed: int = 1) -> Workload:
    """`n` operations of `shape`, from `random.Random(seed)`.

    The result's `stats` describe the model book over the run: the resting
    orders sampled every 1,000 operations after the first half (the warm-up),
    the largest number of orders one account had open, how many aggressive
    orders found fewer than k levels, and how many self-trade prevention cut
    short.
    """
    sh = SHAPES[shape] if isinstance(shape, str) else shape
    rng = random.Random(seed)
    book = _Book()
    w = Workload()
    mid = START_MID
    next_oid = 1
    p_passive, p_cancel = sh.p_passive, sh.p_passive + sh.p_cancel
    samples: list[int] = []
    level_samples: list[int] = []
    short_sweeps = stp_expired = 0

    for i in range(n):
        if rng.random() < sh.drift:
            mid += 1 if rng.random() < 0.5 else -1
        r = rng.random()
        if r >= p_passive and not book.resting:
            r = 0.0  # nothing to cancel or take yet: place instead
        if r < p_passive:
            side = rng.randint(0, 1)
            off = rng.randint(1, sh.offset_max)
            if side == BUY:
                price = mid - off
                ask = book.best(SELL)
                if ask is not None and price >= ask:
                    price = ask - 1  # stay passive: the mid drifted past the far side
            else:
                price = mid + off
                bid = book.best(BUY)
                if bid is not None and price <= bid:
                    price = bid + 1
            qty = rng.randint(sh.qty_min, sh.qty_max)
            oid = next_oid
            next_oid += 1
            book.add(oid, side, price, qty, qty)
            w.append(PASSIVE, oid, side, price, qty)
        elif r < p_cancel:
            oid = book.resting[rng.randrange(len(book.resting))]
            side, price, qty, _leaves = book.orders[oid]
            book.cancel(oid)
            w.append(CANCEL, oid, side, price, qty)
        else:
            side = rng.randint(0, 1)
            if not book.prices[1 - side]:
                side = 1 - side  # nothing to take on that side: take the other
            k = rng.choices(sh.sweep_levels, sh.sweep_weights)[0]
            levels = book.top_levels(1 - side, k)
            short_sweeps += len(levels) < k
            # Trade all of the first k-1 levels and part (or all) of the k-th level's first order.
            first_at_k = book.orders[book.levels[1 - side][levels[-1][0]][0]][3]
            qty = sum(q for _, q in levels[:-1]) + rng.randint(1, first_at_k)
            qty = max(qty, sh.qty_min)  # the minimum notional holds for takers too (a short sweep may want 1 lot)
            oid = next_oid
            next_oid += 1
            if rng.random() < sh.p_market:
                typ, price, limit = MARKET, 0, None
            else:
                typ = CROSSING
                price = limit = levels[-1][0]
                if rng.random() < sh.p_rest:
                    qty = sum(q for _, q in levels) + rng.randint(sh.qty_min, sh.qty_max)
            w.append(typ, oid, side, price, qty)
            left, expired = book.take(oid, side, limit, qty)
            stp_expired += expired
            if typ == CROSSING and left and not expired:
                book.add(oid, side, price, qty, left)
        if i % 1000 == 999 and i >= n // 2:
            samples.append(len(book.resting))
            level_samples.append(len(book.prices[BUY]) + len(book.prices[SELL]))
    w.stats = {
        "resting_min": min(samples, default=0),
        "resting_mean": round(sum(samples) / len(samples), 1) if samples else 0,
        "resting_max": max(samples, default=0),
        "levels_mean": round(sum(level_samples) / len(level_samples), 1) if level_samples else 0,
        "resting_final": len(book.resting),
        "max_open_per_account": book.max_open,
        "short_sweeps": short_sweeps,
        "stp_expired": stp_expired,
    }
    return w
