"""The report chart (exchange.report) on the session of tests/test_summary.py, and its downsampling.

The session's figures (derived in tests/test_summary.py's docstring): BTCUSDT
mark 80,000 → 72,300 (10 min: account 5's partial liquidation) → 70,300
(20 min: account 5's full liquidation and one ADL close at its bankruptcy
price 72,006.8) → 69,900 (30 min: account 1's full liquidation); the index
live from 45 min at 70,500, 71,200, 70,800, 71,500; funding at 8 h.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from exchange.enums import MarginMode, PositionReason, PositionSide, Side
from exchange.events import LiquidationRecorded, MarkPriceUpdated, PositionUpdated, Trade
from exchange.report import ChartSeries, Line, Markers, band, write_chart
from tests.test_summary import HOUR, MIN, session

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def steps(values: list[int]) -> list[int]:
    """The values of a step line without repeats (the index comes with both index and mark events)."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def test_session_chart_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    s = session()
    path = write_chart(s.chart, tmp_path / "report" / "chart.png")
    assert path.exists()
    width, height = png_size(path)
    assert (width, height) == (1400, 900)
    assert width >= 800 and height >= 500
    assert path.stat().st_size > 30_000  # three panels with lines, markers and labels, not a blank canvas


def test_session_series_holds_what_was_set_up() -> None:
    c = session().chart
    assert c.symbol == "BTCUSDT"
    assert c.start_ms == 0 and c.end_ms == 8 * HOUR + 10 * MIN
    # markers at the triggering mark (ticks of 0.1) and, for ADL, at the bankruptcy price
    assert c.liq_partial.points == {(10 * MIN, 723_000): 1}
    assert c.liq_full.points == {(20 * MIN, 703_000): 1, (30 * MIN, 699_000): 1}
    assert c.adl.points == {(20 * MIN, 720_068): 1}
    assert c.liquidations_elsewhere == 0
    # marks: 80,000, 72,300, 70,300, 69,900 set by hand, then the index from the first second after each step
    assert c.mark.v[:4] == [800_000, 723_000, 703_000, 699_000]
    assert c.mark.v[-1] == 715_000
    assert c.index.t[0] == 45 * MIN and steps(c.index.v) == [705_000, 712_000, 708_000, 715_000]
    assert c.last.v[-1] == 715_000
    # open positions (the fund's excluded), one point per 1 s bucket: at t = 0 accounts 1, 2 and 5 open
    # (0 → 3), at 10 min account 3 (4), at 20 min account 5 is gone (3), at 30 min account 1 (2), at
    # 45 min the ETH pair (4)
    assert c.positions.v == [3, 4, 3, 2, 4]
    assert c.positions.lo[0] == 0 and c.positions.t[:4] == [0, 10 * MIN, 20 * MIN, 30 * MIN]
    assert c.symbol_positions.v[-1] == 2
    # the fund: its start, then 3 clearance-fee inflows, its take-over fill, the funding it paid
    assert c.fund.v[0] == 20_000 * 10**8
    assert c.fund.v[-1] == 2_079_623_250_000
    assert min(c.fund.lo) == 20_000 * 10**8


def test_title_and_axis_units(tmp_path: Path) -> None:
    """The figure's texts, read back from matplotlib before saving (a render of the same series)."""
    from matplotlib.figure import Figure

    texts: list[str] = []
    original = Figure.savefig

    def capture(fig: Figure, *args: object, **kwargs: object) -> None:
        texts.append(fig._suptitle.get_text() if fig._suptitle else "")  # type: ignore[attr-defined]
        for ax in fig.axes:
            texts.extend([ax.get_ylabel(), ax.get_xlabel()])
            legend = ax.get_legend()
            if legend is not None:
                texts.extend(t.get_text() for t in legend.get_texts())
        original(fig, *args, **kwargs)

    Figure.savefig = capture  # type: ignore[method-assign]
    try:
        write_chart(session().chart, tmp_path / "c.png")
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
    joined = "\n".join(texts)
    assert "test session: liquidations, ADL and funding" in joined
    assert "BTCUSDT price (USDT)" in texts and "insurance fund (USDT)" in texts and "open positions" in texts
    assert "virtual time since start (h)" in texts
    for label in ("liquidation, full (2)", "liquidation, partial (1)", "ADL close (1)", "mark", "index", "last"):
        assert label in texts


def test_empty_series_still_draws(tmp_path: Path) -> None:
    path = write_chart(ChartSeries(scenario="nothing happened"), tmp_path / "empty.png")
    assert png_size(path) == (1400, 900)


def test_first_symbol_seen_is_the_main_one() -> None:
    c = ChartSeries()
    c.add(Trade(1, 1, 5_000, "ETHUSDT", 1, 300_000, 10, Side.BUY, 1, 1, 2, 2, 0, 0))
    c.add(Trade(2, 1, 6_000, "BTCUSDT", 1, 700_000, 10, Side.BUY, 1, 1, 2, 2, 0, 0))
    assert c.symbol == "ETHUSDT" and c.start_ms == 5_000 and c.end_ms == 6_000
    assert c.last.v == [300_000]


def test_lines_stay_bounded_and_keep_spikes() -> None:
    line = Line(bucket_ms=1_000, max_points=500)
    n = 200_000
    for i in range(n):  # one point every 100 ms for 20,000 s
        line.add(i * 100, 1_000 + (i % 7))
    line.add(n * 100, 5_000)  # a spike ...
    line.add(n * 100 + 1, 1_000)  # ... gone at once
    assert len(line) <= 501
    assert line.bucket_ms > 1_000 and line.bucket_ms % 1_000 == 0
    assert max(line.hi) == 5_000 and min(line.lo) == 1_000
    assert line.t == sorted(line.t) and line.t[-1] == n * 100 + 1 and line.v[-1] == 1_000
    outline = band(line)  # the spike shows as the band of its bucket, between that bucket's start and last point
    assert outline is not None
    x, lows, highs = outline
    assert x == sorted(x) and max(highs) == 5_000 and min(lows) == 1_000
    spike = [xi for xi, h in zip(x, highs, strict=True) if h == 5_000]
    assert spike == [n * 100 - n * 100 % line.bucket_ms, n * 100 + 1]
    flat = Line()
    flat.add(0, 1)
    flat.add(5_000, 2)
    assert band(flat) is None  # one value per bucket: nothing to shade


def test_markers_merge_duplicates_and_stay_bounded() -> None:
    m = Markers(max_markers=100)
    for i in range(10_000):
        m.add(i, 700_000 + i % 3)
    m.add(5, 700_002)
    assert m.total == 10_001
    assert len(m) <= 100 and sum(m.points.values()) == 10_001


def test_chart_series_is_bounded_and_fast_on_a_long_synthetic_run(tmp_path: Path) -> None:
    """180,000 events over 50 hours of virtual time: the chart keeps a bounded number of points."""
    events: list[object] = []
    for i in range(60_000):
        ts = i * 3_000
        events.append(MarkPriceUpdated(3 * i, 3 * i, ts, "BTCUSDT", 700_000 + (i % 500), 700_000))
        events.append(Trade(3 * i + 1, 3 * i + 1, ts, "BTCUSDT", i, 700_000 + (i % 400), 1, Side.BUY, 1, 1, 2, 2, 0, 0))
        events.append(PositionUpdated(3 * i + 2, 3 * i + 2, ts, "BTCUSDT", 1 + i % 50, PositionSide.BOTH,
                                      PositionReason.TRADE, i % 2, 0, MarginMode.CROSS, 20, 0, 0, 0, 0, 0, 0, 0))
        if i % 1_000 == 0:
            events.append(LiquidationRecorded(0, 0, ts, i, "BTCUSDT", 1, PositionSide.BOTH, "LONG", i % 2000 == 0,
                                              MarginMode.CROSS, 20, 1, 1, 700_000, 690_000, 1, 1, 0, 0, 1, 0, 0, 0,
                                              0, []))
    c = ChartSeries("BTCUSDT", "synthetic", tick_sizes={"BTCUSDT": 0.1})
    t0 = time.perf_counter()
    c.add_events(events)
    rate = len(events) / (time.perf_counter() - t0)
    assert c.points <= 6 * 4_001 + 200
    assert c.liq_full.total + c.liq_partial.total == 60
    assert c.mark.bucket_ms > 1_000 and len(c.mark) <= 4_001
    assert rate > 50_000, f"{rate:.0f} events/s"
    path = write_chart(c, tmp_path / "long.png")
    assert png_size(path) == (1400, 900)
