"""Deterministic index price paths and the weighted feed built on them."""

from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import pytest

from exchange.index_price import IndexSource, index_price_detail
from exchange.instrument import btcusdt
from exchange.price_paths import (
    IndexFeed,
    Outage,
    PathDataError,
    PointsPath,
    RandomWalk,
    Shock,
    WeightedSource,
    csv_path,
    read_csv_path,
    samples,
)


def test_points_step() -> None:
    p = PointsPath([(1000, 100), (2000, 110), (4000, 90)])
    assert p.price_at(0) == 100  # before the first point: the first price
    assert p.price_at(1000) == 100
    assert p.price_at(1999) == 100
    assert p.price_at(2000) == 110
    assert p.price_at(3999) == 110
    assert p.price_at(10_000) == 90  # after the last: the last


def test_points_linear_rounds_half_even() -> None:
    p = PointsPath([(0, 100), (4000, 110), (6000, 90)], linear=True)
    # 100 + 10 × 1000/4000 = 102.5 → 102 (even); at 3000: 107.5 → 108; at 2000: 105
    assert p.price_at(1000) == 102
    assert p.price_at(3000) == 108
    assert p.price_at(2000) == 105
    # 110 + (90 − 110) × 500/2000 = 105
    assert p.price_at(4500) == 105
    assert p.price_at(6000) == 90 and p.price_at(7000) == 90


def test_points_must_increase() -> None:
    with pytest.raises(ValueError):
        PointsPath([(1000, 100), (1000, 101)])
    with pytest.raises(ValueError):
        PointsPath([])


def test_shock_on_a_flat_path() -> None:
    # −12% over 90 s from 100 s, then half of it back over 90 s; base 1,000,000 ticks
    flat = PointsPath([(0, 1_000_000)])
    s = Shock(flat, start_ms=100_000)
    assert s.price_at(99_999) == 1_000_000
    assert s.price_at(100_000) == 1_000_000
    assert s.price_at(145_000) == 940_000  # half way down: −6%
    assert s.price_at(190_000) == 880_000  # bottom: −12%
    assert s.price_at(235_000) == 910_000  # half way back up: −12% + 3% = −9%
    assert s.price_at(280_000) == 940_000  # half back: −6%, then held
    assert s.price_at(10**9) == 940_000
    # one ms in: −12% × 1/90000 of 1,000,000 = −1.333… → 999,998.67 → 999,999
    assert s.price_at(100_001) == 999_999
    assert s.move_at(100_001) == Fraction(-120_000, 90_000)


def test_shocks_compose() -> None:
    # +10% at once (duration 0, no retrace) on top of −12%/half back: 1,000,000 × 0.94 × 1.1 = 1,034,000
    flat = PointsPath([(0, 1_000_000)])
    s = Shock(Shock(flat, 0), 0, move_ppm=100_000, duration_ms=0, retrace_ppm=0, retrace_ms=0)
    assert s.price_at(500_000) == 1_034_000


def test_random_walk_with_shock_is_reproducible() -> None:
    # a seeded walk (1 s steps, 100 ppm per step) on BTCUSDT ticks with a scripted crash at 10 min
    def series(seed: int) -> list[int | None]:
        walk = RandomWalk(start_ticks=500_000, seed=seed, vol_ppm=100)
        shocked = Shock(walk, start_ms=600_000, move_ppm=-120_000, duration_ms=90_000)
        return [p for _, p in samples(shocked, 0, 1_200_000, 1_000)]

    a, b = series(7), series(7)
    assert a == b
    assert len(a) == 1201
    assert series(8) != a
    # the shock shows: the bottom at 690 s is ~12% below the pre-shock level
    assert a[690] < a[600] * 90 // 100


def test_random_walk_golden_values() -> None:
    # pinned: random.Random(seed).randint is the only source of randomness, integer arithmetic only,
    # so these are the same on every platform
    w = RandomWalk(500_000, seed=42, vol_ppm=100)
    assert [w.price_at(t * 1000) for t in range(8)] == [
        500000, 499938, 499855, 499829, 499812, 499775, 499777, 499806,
    ]


def test_random_walk_any_query_order() -> None:
    w1 = RandomWalk(500_000, seed=3, vol_ppm=200)
    w2 = RandomWalk(500_000, seed=3, vol_ppm=200)
    late = w1.price_at(50_000)
    assert [w2.price_at(t) for t in range(0, 50_001, 500)][-1] == late
    assert w1.price_at(49_999) == w1.price_at(49_000)  # holds between steps
    assert w1.price_at(-5_000) == 500_000  # before the start: the start price


def test_random_walk_volatility_is_about_right() -> None:
    # 1000 ppm per step: the mean squared return over 3000 steps ≈ (10^-3)^2 = 10^-6 (within 15%)
    w = RandomWalk(10**9, seed=1, vol_ppm=1000)
    ps = [w.price_at(t * 1000) for t in range(3001)]
    ms = sum(Fraction((b - a) ** 2, a * a) for a, b in pairwise(ps)) / 3000
    assert Fraction(85, 10**8) < ms < Fraction(115, 10**8)


def test_random_walk_zero_vol_is_flat_and_floor_holds() -> None:
    w = RandomWalk(1000, seed=1, vol_ppm=0)
    assert {w.price_at(t * 1000) for t in range(100)} == {1000}
    # a drift of −50% a step hits the floor of 5 ticks and stays there
    w = RandomWalk(1000, seed=1, vol_ppm=0, drift_ppm=-500_000, min_ticks=5)
    assert w.price_at(60_000) == 5


def test_csv_replay(tmp_path: Path) -> None:
    ins = btcusdt()
    f = tmp_path / "btc.csv"
    f.write_text("ts_ms,price,venue\n0,50000.0,x\n1000,50000.5,x\n\n3000,49999.9,x\n")
    p = csv_path(f, ins)
    assert p.price_at(0) == 500_000
    assert p.price_at(2_500) == 500_005
    assert p.price_at(3_000) == 499_999
    lin = csv_path(f, ins, linear=True)
    # halfway between 500005 and 499999: 500002
    assert lin.price_at(2_000) == 500_002


@pytest.mark.parametrize(("text", "fragment"), [
    ("ts_ms,price\n0,50000.0\n1000,50000.05\n", "btc.csv line 3"),  # off the 0.10 tick
    ("ts_ms,price\n0,50000.0\n1000,abc\n", "btc.csv line 3"),  # not a decimal
    ("ts_ms,price\n0,50000.0\n1.5,50000.0\n", "btc.csv line 3: ts_ms '1.5'"),
    ("ts_ms,price\n1000,50000.0\n1000,50000.1\n", "btc.csv line 3: ts_ms 1000 does not increase"),
    ("ts_ms,price\n0,50000.0\n1000,-1.0\n", "btc.csv line 3"),
    ("ts_ms,price\n0,50000.0\n1000\n", "btc.csv line 3: expected 2 columns"),
    ("time,price\n0,50000.0\n", "btc.csv line 1: header"),
    ("", "btc.csv: empty"),
    ("ts_ms,price\n", "btc.csv: no data rows"),
])
def test_csv_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(PathDataError, match=fragment):
        read_csv_path(text.splitlines(keepends=True), btcusdt(), "btc.csv")


def test_outage_drops_a_source_from_the_index() -> None:
    # three venues at 1000, 1010, 1030 (weights 1, 1, 2); venue c unreachable between 10 s and 20 s
    feed = IndexFeed([
        WeightedSource("a", 1, PointsPath([(0, 1000)])),
        WeightedSource("b", 1, PointsPath([(0, 1010)])),
        WeightedSource("c", 2, Outage(PointsPath([(0, 1030)]), 10_000, 20_000)),
    ])
    # all present: median 1010, none off → (1000 + 1010 + 2×1030) / 4 = 4070 / 4 = 1017.5 → 1018 (even)
    assert feed.index_at(0) == 1018
    # c missing: (1000 + 1010) / 2 = 1005
    assert feed.sources_at(15_000)[2] == IndexSource("c", 2, None)
    assert feed.index_at(15_000) == 1005
    assert feed.index_at(20_000) == 1018


def test_shock_on_one_venue_is_excluded_from_the_index() -> None:
    # venue c crashes −12% over 90 s; the others stay at 1,000,000 ticks
    flat = PointsPath([(0, 1_000_000)])
    feed = IndexFeed([
        WeightedSource("a", 1, flat),
        WeightedSource("b", 1, PointsPath([(0, 1_000_100)])),
        WeightedSource("c", 1, Shock(flat, 0)),
    ])
    # at 30 s c is −4% (960,000): within 5% of the median 1,000,000 → (1,000,000 + 1,000,100 + 960,000) / 3
    # = 2,960,100 / 3 = 986,700
    assert feed.index_at(30_000) == 986_700
    # at 60 s c is −8% (920,000): off → (1,000,000 + 1,000,100) / 2 = 1,000,050
    r = index_price_detail(feed.sources_at(60_000))
    assert r is not None and r.excluded == ("c",) and r.price_ticks == 1_000_050
