"""Deterministic index-source price paths in virtual time, and a weighted feed of them.

Every path answers `price_at(ts) -> int | None`: the price in ticks at virtual
time `ts` (ms), None when the source is unreachable (an `Outage`). `samples`
turns any path into the (ts, price) series of a clock. Paths are pure
functions of their configuration (a seed included): two runs with one seed
give the same series on any platform. Integer and exact rational arithmetic
only; each rounding to ticks is to the nearest tick, ties to even (half-even).

    PointsPath   a list of (ts, price) points, held (step) or linearly interpolated
    RandomWalk   a seeded multiplicative random walk with a volatility per step
    Shock        a move such as "−12% over 90 s, then half of it back", on top of any path
    Outage       a path that is missing (None) for a while: the index drops the source
    csv_path     a CSV replay (columns ts_ms, price as a decimal string), via Instrument.price_ticks
    IndexFeed    several weighted sources of one symbol → `index_price` (mechanics.md §1.1)

Intended integration: a scenario builds one `IndexFeed` per symbol; the
market-data clock tick (every second of virtual time) calls
`feed.index_at(now)` (or `feed.sources_at(now)` into
`exchange.index_price.index_price_detail` for the excluded venues) and feeds
the index to `MarkPriceModel` and `FundingRateModel`.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Protocol

from exchange.brackets import PPM
from exchange.index_price import DEFAULT_MAX_DEVIATION_PPM, IndexSource, index_price
from exchange.instrument import Instrument


class PricePath(Protocol):
    def price_at(self, ts: int) -> int | None:
        """The price in ticks at virtual time `ts` (ms); None: the source cannot be reached."""
        ...


def samples(path: PricePath, start_ms: int, end_ms: int, step_ms: int = 1_000) -> Iterator[tuple[int, int | None]]:
    """(ts, price) for ts = start, start + step, … ≤ end."""
    if step_ms <= 0:
        raise ValueError("step must be positive")
    for ts in range(start_ms, end_ms + 1, step_ms):
        yield ts, path.price_at(ts)


class PointsPath:
    """Prices given at points in time. Step: the last point at or before ts holds.
    Linear: p0 + (p1 − p0) × (ts − t0) / (t1 − t0) between points, rounded half-even.
    Before the first point the first price holds, after the last the last."""

    __slots__ = ("linear", "prices", "times")

    def __init__(self, points: Iterable[tuple[int, int]], linear: bool = False) -> None:
        pts = list(points)
        if not pts:
            raise ValueError("a points path needs at least one point")
        for i, (ts, price) in enumerate(pts):
            if price <= 0:
                raise ValueError(f"point {i}: price must be positive, got {price}")
            if i and ts <= pts[i - 1][0]:
                raise ValueError(f"point {i}: times must increase ({ts} after {pts[i - 1][0]})")
        self.times = [t for t, _ in pts]
        self.prices = [p for _, p in pts]
        self.linear = linear

    def price_at(self, ts: int) -> int:
        times, prices = self.times, self.prices
        # index of the last point at or before ts
        lo, hi = 0, len(times)
        while lo < hi:
            mid = (lo + hi) // 2
            if times[mid] <= ts:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1
        if i < 0:
            return prices[0]
        if not self.linear or i == len(times) - 1 or times[i] == ts:
            return prices[i]
        t0, t1, p0, p1 = times[i], times[i + 1], prices[i], prices[i + 1]
        return round(p0 + Fraction((p1 - p0) * (ts - t0), t1 - t0))  # half-even, exact


#: A random walk keeps its price in millionths of a tick between steps, so small moves accumulate.
_SUB = 1_000_000
#: The step shock z is the sum of 12 integers uniform on [−500, 500], in thousandths of a standard
#: deviation: mean 0, standard deviation 2·√(500·501) ≈ 1001 (Irwin–Hall, close to a normal).
_Z_TERMS = 12
_Z_HALF_RANGE = 500


class RandomWalk:
    """A seeded multiplicative random walk, one step every `step_ms` from `start_ms`.

    Step n → n + 1:  P ← P × (1 + drift + vol × z),  z ≈ N(0, 1) drawn as an integer
    (thousandths) from `random.Random(seed).randint` only (no float draws), with
    `vol_ppm` the standard deviation of one step's return and `drift_ppm` its mean,
    both in ppm. The state is integer millionths of a tick, rounded half-even at
    each step and floored at `min_ticks`; `price_at` rounds it half-even to ticks.
    The price holds between steps; before `start_ms` it is the start price.
    Steps are generated lazily and kept, so `price_at` may be asked in any order.
    """

    __slots__ = ("_rng", "_state", "drift_ppm", "min_ticks", "prices", "start_ms", "step_ms", "vol_ppm")

    def __init__(
        self, start_ticks: int, seed: int, vol_ppm: int, step_ms: int = 1_000, start_ms: int = 0,
        drift_ppm: int = 0, min_ticks: int = 1,
    ) -> None:
        if start_ticks <= 0 or step_ms <= 0 or vol_ppm < 0 or min_ticks <= 0:
            raise ValueError("random walk: start price, step and min price must be positive, vol ≥ 0")
        if type(seed) is not int:
            raise TypeError("random walk: the seed must be an int")
        self._rng = random.Random(seed)
        self._state = start_ticks * _SUB
        self.vol_ppm = vol_ppm
        self.drift_ppm = drift_ppm
        self.step_ms = step_ms
        self.start_ms = start_ms
        self.min_ticks = min_ticks
        self.prices = [start_ticks]  # price in ticks after step n

    def _step(self) -> None:
        rng = self._rng
        z_milli = sum(rng.randint(-_Z_HALF_RANGE, _Z_HALF_RANGE) for _ in range(_Z_TERMS))
        # relative move in parts per 10^9: drift (ppm × 1000) + vol (ppm) × z (thousandths)
        move_ppb = self.drift_ppm * 1_000 + self.vol_ppm * z_milli
        state = round(Fraction(self._state * (10**9 + move_ppb), 10**9))  # half-even, exact
        self._state = max(state, self.min_ticks * _SUB)
        self.prices.append(round(Fraction(self._state, _SUB)))

    def price_at(self, ts: int) -> int:
        n = (ts - self.start_ms) // self.step_ms if ts > self.start_ms else 0
        while len(self.prices) <= n:
            self._step()
        return self.prices[n]


class Shock:
    """A relative move on top of another path: linear to `move_ppm` over `duration_ms` from `start_ms`,
    then linearly back by `retrace_ppm` of it over `retrace_ms`, then held.

    The default is "−12% over 90 s, then half back over 90 s": the factor on the
    base price goes 1 → 0.88 → 0.94. price = base × (1 + move(ts)), exact, rounded
    half-even to ticks. Shocks compose: `Shock(Shock(walk, …), …)`.
    """

    __slots__ = ("base", "duration_ms", "move_ppm", "retrace_ms", "retrace_ppm", "start_ms")

    def __init__(
        self, base: PricePath, start_ms: int, move_ppm: int = -120_000, duration_ms: int = 90_000,
        retrace_ppm: int = 500_000, retrace_ms: int = 90_000,
    ) -> None:
        if duration_ms < 0 or retrace_ms < 0 or move_ppm <= -PPM:
            raise ValueError("shock: durations must be ≥ 0 and the move above −100%")
        self.base = base
        self.start_ms = start_ms
        self.move_ppm = move_ppm
        self.duration_ms = duration_ms
        self.retrace_ppm = retrace_ppm
        self.retrace_ms = retrace_ms

    def move_at(self, ts: int) -> Fraction:
        """The relative move at `ts` in ppm (exact)."""
        t = ts - self.start_ms
        if t < 0:
            return Fraction(0)
        move = Fraction(self.move_ppm)
        if t < self.duration_ms:
            return move * t / self.duration_ms
        t -= self.duration_ms
        back = move * self.retrace_ppm / PPM
        if t < self.retrace_ms:
            return move - back * t / self.retrace_ms
        return move - back

    def price_at(self, ts: int) -> int | None:
        base = self.base.price_at(ts)
        if base is None:
            return None
        return max(1, round(base * (PPM + self.move_at(ts)) / PPM))  # half-even, exact


class Outage:
    """`base`, except unreachable (None) for start_ms ≤ ts < end_ms."""

    __slots__ = ("base", "end_ms", "start_ms")

    def __init__(self, base: PricePath, start_ms: int, end_ms: int) -> None:
        self.base = base
        self.start_ms = start_ms
        self.end_ms = end_ms

    def price_at(self, ts: int) -> int | None:
        return None if self.start_ms <= ts < self.end_ms else self.base.price_at(ts)


class PathDataError(ValueError):
    """Bad input in a price file; the message names the file and the line."""


_INT = re.compile(r"[0-9]+")


def read_csv_path(lines: Iterable[str], instrument: Instrument, name: str = "<csv>", linear: bool = False,
                  ) -> PointsPath:
    """A `PointsPath` from CSV text with a header naming the columns `ts_ms` and `price` (others are ignored).

    `ts_ms` is a non-negative integer of virtual ms, strictly increasing;
    `price` a decimal string on the instrument's tick grid (`Instrument.price_ticks`),
    positive. Blank lines are skipped. Any bad value raises `PathDataError`
    naming `name` and the line.
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise PathDataError(f"{name}: empty file, expected a header with ts_ms and price")
    cols = [c.strip() for c in header]
    if "ts_ms" not in cols or "price" not in cols:
        raise PathDataError(f"{name} line {reader.line_num}: header must name ts_ms and price, got {header}")
    i_ts, i_price = cols.index("ts_ms"), cols.index("price")
    points: list[tuple[int, int]] = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{name} line {reader.line_num}"
        if len(row) <= max(i_ts, i_price):
            raise PathDataError(f"{where}: expected {len(cols)} columns, got {len(row)}")
        ts_s, price_s = row[i_ts].strip(), row[i_price].strip()
        if not _INT.fullmatch(ts_s):
            raise PathDataError(f"{where}: ts_ms {ts_s!r} is not a non-negative integer")
        ts = int(ts_s)
        if points and ts <= points[-1][0]:
            raise PathDataError(f"{where}: ts_ms {ts} does not increase (previous {points[-1][0]})")
        try:
            price = instrument.price_ticks(price_s)
        except ValueError as e:
            raise PathDataError(f"{where}: {e}") from None
        if price <= 0:
            raise PathDataError(f"{where}: price {price_s} must be positive")
        points.append((ts, price))
    if not points:
        raise PathDataError(f"{name}: no data rows")
    return PointsPath(points, linear)


def csv_path(path: str | Path, instrument: Instrument, linear: bool = False) -> PointsPath:
    """`read_csv_path` of a file; errors name the file by its base name and the line."""
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        return read_csv_path(f, instrument, p.name, linear)


class WeightedSource(NamedTuple):
    venue: str
    weight: int
    path: PricePath


class IndexFeed:
    """The index sources of one symbol, each a weighted price path (mechanics.md §1.1)."""

    __slots__ = ("max_deviation_ppm", "sources")

    def __init__(self, sources: Sequence[WeightedSource], max_deviation_ppm: int = DEFAULT_MAX_DEVIATION_PPM) -> None:
        if not sources:
            raise ValueError("an index feed needs at least one source")
        self.sources = list(sources)
        self.max_deviation_ppm = max_deviation_ppm

    def sources_at(self, ts: int) -> list[IndexSource]:
        return [IndexSource(s.venue, s.weight, s.path.price_at(ts)) for s in self.sources]

    def index_at(self, ts: int) -> int | None:
        """`index_price` of the sources at `ts` (None when none is reachable)."""
        return index_price(self.sources_at(ts), self.max_deviation_ppm)
