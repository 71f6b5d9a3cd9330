"""The run report chart: prices, liquidations, the insurance fund and open positions over virtual time.

`ChartSeries` is fed every event of a run (`add`, `add_events`, `on_step`;
dispatch on the event's exact type through a dict) and keeps what the chart
needs, downsampled so that its size is bounded whatever the run's length:

* each line (index, mark and last price of the main symbol, the insurance
  fund's balance, the number of open positions) keeps at most one point per
  bucket of virtual time: the last value in the bucket, with the bucket's
  low and high (drawn as a faint band, so a spike inside a bucket is not
  lost). Buckets start at `bucket_ms` (1 s) and double whenever a line would
  exceed `max_points` points, merging neighbours: a line never holds more
  than `max_points` + 1 points;
* every liquidation (full and partial apart) and every ADL close of the main
  symbol is a marker at its exact virtual time and price (the mark that
  triggered the liquidation; the bankruptcy price the ADL closed at). Markers
  at the same time and price are one marker with a count; past `max_markers`
  distinct ones, their times are snapped to a coarser grid (also doubling).

Funding settlements are kept as times (at most `MAX_FUNDING_LINES`).

`write_chart(series, path)` draws the PNG with matplotlib's Agg canvas (no
display, no pyplot state), 1400 × 900 px: three panels sharing the time axis
(minutes, or hours for runs over two hours, from time zero: the engine's
clock when `for_engine` made the series, else the first event) and a title
with the scenario's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.clearing import FUND_ACCOUNT
from exchange.events import (
    AdlExecuted,
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    IndexPriceUpdated,
    InsuranceFundUpdated,
    LiquidationRecorded,
    MarkPriceUpdated,
    PositionUpdated,
    Trade,
)
from exchange.summary import FundBalance, foreign_symbols, fund_balance

if TYPE_CHECKING:
    from exchange.engine import Engine

#: The chart's size: 14 × 9 inches at 100 dpi = 1400 × 900 px.
FIGSIZE = (14.0, 9.0)
DPI = 100
#: Funding times drawn as vertical lines (a run longer than that many funding intervals draws the first ones).
MAX_FUNDING_LINES = 200


class Line:
    """One downsampled line: per bucket of virtual time, the time and value of its last point, its low and high."""

    __slots__ = ("bucket_ms", "hi", "lo", "max_points", "t", "v", "_bucket")

    def __init__(self, bucket_ms: int = 1000, max_points: int = 4000) -> None:
        if bucket_ms <= 0 or max_points < 2:
            raise ValueError("bucket_ms must be > 0 and max_points ≥ 2")
        self.bucket_ms = bucket_ms
        self.max_points = max_points
        self.t: list[int] = []
        self.v: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self._bucket: int | None = None

    def __len__(self) -> int:
        return len(self.t)

    def add(self, ts: int, value: int) -> None:
        b = ts // self.bucket_ms
        if b == self._bucket:
            self.t[-1] = ts
            self.v[-1] = value
            if value < self.lo[-1]:
                self.lo[-1] = value
            elif value > self.hi[-1]:
                self.hi[-1] = value
            return
        self._bucket = b
        self.t.append(ts)
        self.v.append(value)
        self.lo.append(value)
        self.hi.append(value)
        if len(self.t) > self.max_points:
            self._coarsen()

    def _coarsen(self) -> None:
        """Double the bucket until the line fits, merging the points that now share a bucket."""
        while len(self.t) > self.max_points:
            self.bucket_ms *= 2
            width = self.bucket_ms
            t, v, lo, hi = [], [], [], []
            last = None
            for ts, val, low, high in zip(self.t, self.v, self.lo, self.hi, strict=True):
                b = ts // width
                if b == last:
                    t[-1], v[-1] = ts, val
                    lo[-1] = min(lo[-1], low)
                    hi[-1] = max(hi[-1], high)
                else:
                    last = b
                    t.append(ts)
                    v.append(val)
                    lo.append(low)
                    hi.append(high)
            self.t, self.v, self.lo, self.hi = t, v, lo, hi
            self._bucket = last


class Markers:
    """Point events (liquidations, ADL) as {(time, price): count}, with a bounded number of distinct points."""

    __slots__ = ("grid_ms", "max_markers", "points", "total")

    def __init__(self, max_markers: int = 20_000) -> None:
        self.max_markers = max_markers
        self.grid_ms = 1
        self.points: dict[tuple[int, int], int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self.points)

    def add(self, ts: int, price: int) -> None:
        self.total += 1
        key = (ts - ts % self.grid_ms, price)
        points = self.points
        points[key] = points.get(key, 0) + 1
        if len(points) > self.max_markers:
            while len(self.points) > self.max_markers:
                self.grid_ms *= 2
                merged: dict[tuple[int, int], int] = {}
                for (t, p), n in self.points.items():
                    k = (t - t % self.grid_ms, p)
                    merged[k] = merged.get(k, 0) + n
                self.points = merged


class ChartSeries:
    """What the report chart draws, fed event by event (see the module docstring)."""

    def __init__(self, symbol: str | None = None, scenario: str = "", insurance_fund_start: int = 0,
                 asset: str = "USDT", tick_sizes: dict[str, float] | None = None, atom: float = 1e-8,
                 foreign: frozenset[str] = frozenset(), start_ms: int | None = None, bucket_ms: int = 1000,
                 max_points: int = 4000, max_markers: int = 20_000) -> None:
        """`symbol`: the main symbol (None: the first one an event names); `tick_sizes`: price per tick of
        each symbol, for the axis (none: prices in ticks); `atom`: the asset's atom, for the fund's axis;
        `start_ms`: time zero of the axis (None: the first event's time)."""
        self.symbol = symbol
        self.scenario = scenario
        self.asset = asset
        self.tick_sizes = dict(tick_sizes or {})
        self.atom = atom
        self.start_ms = start_ms
        self.end_ms = start_ms if start_ms is not None else 0
        self.index = Line(bucket_ms, max_points)
        self.mark = Line(bucket_ms, max_points)
        self.last = Line(bucket_ms, max_points)
        self.fund = Line(bucket_ms, max_points)
        self.positions = Line(bucket_ms, max_points)  # open positions, all symbols (the fund's excluded)
        self.symbol_positions = Line(bucket_ms, max_points)  # of the main symbol
        self.liq_full = Markers(max_markers)
        self.liq_partial = Markers(max_markers)
        self.adl = Markers(max_markers)
        self.liquidations_elsewhere = 0  # liquidation records of the other symbols
        self.funding_times: set[int] = set()  # funding settlements (any symbol), at most MAX_FUNDING_LINES
        self.fund_tracker = FundBalance(insurance_fund_start, asset, foreign)
        self.insurance_fund_start = insurance_fund_start
        self._open: set[tuple[int, str, object]] = set()
        self._open_symbol = 0
        self._dispatch: dict[type, Callable[[Any], None]] = {
            MarkPriceUpdated: self._mark,
            IndexPriceUpdated: self._index,
            Trade: self._trade,
            LiquidationRecorded: self._liquidation,
            AdlExecuted: self._adl,
            PositionUpdated: self._position,
            InsuranceFundUpdated: self._fund_updated,
            BalanceUpdated: self._balance,
            FundingSettled: self._funding_settled,
            FundingPayment: self._funding_payment,
        }
        if start_ms is not None:
            self._begin(start_ms)

    @classmethod
    def for_engine(cls, engine: Engine, scenario: str = "", symbol: str | None = None, asset: str | None = None,
                   **kwargs: Any) -> ChartSeries:
        """A series of what `engine` does from now on: main symbol `symbol` (default: the engine's first),
        the fund's balance now as its start, the engine's clock as time zero."""
        if symbol is None:
            symbol = next(iter(engine.markets))
        if symbol not in engine.markets:
            raise ValueError(f"unknown symbol {symbol!r}")
        if asset is None:
            asset = engine.markets[symbol].instrument.settlement_asset
        ticks = {s: float(m.instrument.tick) for s, m in engine.markets.items()}
        atom = next((float(m.instrument.money_atom) for m in engine.markets.values()
                     if m.instrument.settlement_asset == asset), 1e-8)
        series = cls(symbol, scenario, fund_balance(engine, asset), asset, ticks, atom,
                     foreign_symbols(engine, asset), None, **kwargs)
        if engine.clearing is not None:  # the positions already open
            for pos in engine.clearing.all_positions():
                if pos.qty and pos.account != FUND_ACCOUNT:
                    series._open.add((pos.account, pos.symbol, pos.position_side))
                    series._open_symbol += pos.symbol == symbol
        series._begin(engine.clock.now)
        return series

    def _begin(self, ts: int) -> None:
        """Time zero: the lines' first points (the fund's start, the positions open then)."""
        self.start_ms = ts
        self.end_ms = max(self.end_ms, ts)
        self.fund.add(ts, self.fund_tracker.balance)
        self.positions.add(ts, len(self._open))
        self.symbol_positions.add(ts, self._open_symbol)

    # ------------------------------------------------------------ feeding
    def add(self, event: Event) -> None:
        if self.start_ms is None:
            self._begin(event.ts)
        self.end_ms = event.ts
        handler = self._dispatch.get(event.__class__)
        if handler is not None:
            handler(event)

    def add_events(self, events: Iterable[Event]) -> None:
        dispatch = self._dispatch
        ts = None
        for event in events:
            ts = event.ts
            if self.start_ms is None:
                self._begin(ts)
            handler = dispatch.get(event.__class__)
            if handler is not None:
                handler(event)
        if ts is not None:
            self.end_ms = ts

    def on_step(self, command: object, events: list[Event]) -> None:
        """A `(command, events)` step, as `scenario_run.drive` and the runtime's sinks hand them."""
        self.add_events(events)

    def _main(self, symbol: str, ts: int) -> bool:
        """Is `symbol` the main symbol (the first one seen becomes it when none was given)?"""
        if self.symbol is None:
            self.symbol = symbol
        return symbol == self.symbol

    def _mark(self, ev: MarkPriceUpdated) -> None:
        if ev.symbol == self.symbol or self._main(ev.symbol, ev.ts):
            self.mark.add(ev.ts, ev.mark_price)
            if ev.index_price:
                self.index.add(ev.ts, ev.index_price)

    def _index(self, ev: IndexPriceUpdated) -> None:
        if (ev.symbol == self.symbol or self._main(ev.symbol, ev.ts)) and ev.index_price:
            self.index.add(ev.ts, ev.index_price)

    def _trade(self, ev: Trade) -> None:
        if ev.symbol == self.symbol or self._main(ev.symbol, ev.ts):
            self.last.add(ev.ts, ev.price)

    def _liquidation(self, ev: LiquidationRecorded) -> None:
        if ev.symbol == self.symbol or self._main(ev.symbol, ev.ts):
            (self.liq_partial if ev.partial else self.liq_full).add(ev.ts, ev.trigger_price)
        else:
            self.liquidations_elsewhere += 1

    def _adl(self, ev: AdlExecuted) -> None:
        if ev.symbol == self.symbol or self._main(ev.symbol, ev.ts):
            self.adl.add(ev.ts, ev.price)

    def _position(self, ev: PositionUpdated) -> None:
        account = ev.account
        if account == FUND_ACCOUNT:
            if self.fund_tracker.position(ev):
                self.fund.add(ev.ts, self.fund_tracker.balance)
            return
        key = (account, ev.symbol, ev.position_side)
        open_ = self._open
        was = key in open_
        if ev.qty:
            if was:
                return
            open_.add(key)
            delta = 1
        else:
            if not was:
                return
            open_.discard(key)
            delta = -1
        self.positions.add(ev.ts, len(open_))
        if ev.symbol == self.symbol or self._main(ev.symbol, ev.ts):
            self._open_symbol += delta
            self.symbol_positions.add(ev.ts, self._open_symbol)

    def _fund_updated(self, ev: InsuranceFundUpdated) -> None:
        if self.fund_tracker.fund_updated(ev):
            self.fund.add(ev.ts, ev.balance)

    def _balance(self, ev: BalanceUpdated) -> None:
        if ev.account == FUND_ACCOUNT and self.fund_tracker.balance_updated(ev):
            self.fund.add(ev.ts, ev.balance)

    def _funding_settled(self, ev: FundingSettled) -> None:
        if len(self.funding_times) < MAX_FUNDING_LINES:
            self.funding_times.add(ev.ts)
        if self.fund_tracker.funding_settled(ev):
            self.fund.add(ev.ts, self.fund_tracker.balance)

    def _funding_payment(self, ev: FundingPayment) -> None:
        if ev.account == FUND_ACCOUNT and self.fund_tracker.funding_payment(ev):
            self.fund.add(ev.ts, self.fund_tracker.balance)

    # ------------------------------------------------------------ figures
    @property
    def points(self) -> int:
        """How many points the chart holds (lines and distinct markers): bounded, whatever the run's length."""
        lines = (self.index, self.mark, self.last, self.fund, self.positions, self.symbol_positions)
        return sum(len(x) for x in lines) + len(self.liq_full) + len(self.liq_partial) + len(self.adl)


def band(line: Line) -> tuple[list[int], list[int], list[int]] | None:
    """The outline (times, lows, highs) of the range each bucket's values covered, for `fill_between`.

    Over each bucket, from its start (or the previous point, if later) to its last point's time, the band
    spans the bucket's low..high; from there to the next bucket it closes on the value held. None when
    no bucket saw more than one value (nothing to show).
    """
    if all(a == b for a, b in zip(line.lo, line.hi, strict=True)):
        return None
    width = line.bucket_ms
    x: list[int] = []
    lows: list[int] = []
    highs: list[int] = []
    prev_t: int | None = None
    prev_v = 0
    for t, v, lo, hi in zip(line.t, line.v, line.lo, line.hi, strict=True):
        start = t - t % width
        if prev_t is not None:
            start = max(start, prev_t)
            x.append(start)  # the value held since the previous point, up to this bucket's start
            lows.append(prev_v)
            highs.append(prev_v)
        x += [start, t, t]
        lows += [lo, lo, v]
        highs += [hi, hi, v]
        prev_t, prev_v = t, v
    return x, lows, highs


def _time_unit(span_ms: int) -> tuple[str, float]:
    if span_ms > 2 * 3_600_000:
        return "h", 3_600_000.0
    return "min", 60_000.0


def write_chart(series: ChartSeries, path: str | Path, title: str | None = None) -> Path:
    """Draw `series` as a PNG at `path` (parents created); returns the path.

    Top: index, mark and last price of the main symbol, liquidations (full: filled red triangles,
    partial: hollow orange circles, at the triggering mark) and ADL closes (purple crosses, at the
    bankruptcy price). Middle: the insurance fund's balance. Bottom: open positions (the fund's
    excluded), all symbols and the main symbol's.
    """
    from matplotlib.figure import Figure  # imported here: the accumulator does not need matplotlib
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = series.start_ms if series.start_ms is not None else 0
    end = max(series.end_ms, t0)
    unit, per = _time_unit(end - t0)
    tick = series.tick_sizes.get(series.symbol or "", 1.0)
    atom = series.atom

    def xs(ts: Iterable[int]) -> list[float]:
        return [(t - t0) / per for t in ts]

    def extended(line: Line) -> tuple[list[int], list[int]]:
        """The line's (times, values) held to the end of the run (values persist until they change)."""
        t, v = list(line.t), list(line.v)
        if t and t[-1] < end:
            t.append(end)
            v.append(v[-1])
        return t, v

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    grid = fig.add_gridspec(3, 1, height_ratios=[3.0, 1.5, 1.2], hspace=0.12, left=0.07, right=0.98, top=0.91,
                            bottom=0.07)
    ax_price = fig.add_subplot(grid[0])
    ax_fund = fig.add_subplot(grid[1], sharex=ax_price)
    ax_pos = fig.add_subplot(grid[2], sharex=ax_price)

    # --- prices
    drawn = False
    for line, label, style in (  # the index last, dashed: visible where the mark sits on it
        (series.mark, "mark", {"color": "tab:blue", "linewidth": 1.8}),
        (series.last, "last", {"color": "tab:orange", "linewidth": 1.0, "alpha": 0.9}),
        (series.index, "index", {"color": "0.2", "linestyle": (0, (4, 3)), "linewidth": 1.1}),
    ):
        if not len(line):
            continue
        t, v = extended(line)
        ax_price.plot(xs(t), [p * tick for p in v], drawstyle="steps-post", label=label, **style)
        outline = band(line)
        if outline is not None:
            bx, blo, bhi = outline
            ax_price.fill_between(xs(bx), [p * tick for p in blo], [p * tick for p in bhi], color=style["color"],
                                  alpha=0.15, linewidth=0)
        drawn = True
    for markers, label, style in (
        (series.liq_full, "liquidation, full", {"marker": "v", "color": "red", "edgecolors": "black", "zorder": 5}),
        (series.liq_partial, "liquidation, partial",
         {"marker": "o", "facecolors": "none", "edgecolors": "darkorange", "linewidths": 2.0, "zorder": 6}),
        (series.adl, "ADL close", {"marker": "X", "color": "purple", "edgecolors": "white", "zorder": 7}),
    ):
        if not markers.points:
            continue
        keys = list(markers.points)
        sizes = [70.0 * min(markers.points[k], 25) ** 0.5 for k in keys]
        ax_price.scatter(xs(k[0] for k in keys), [k[1] * tick for k in keys], s=sizes,
                         label=f"{label} ({markers.total})", **style)
        drawn = True
    if not drawn:
        ax_price.text(0.5, 0.5, "no prices", transform=ax_price.transAxes, ha="center", va="center", color="0.5")
    unit_name = series.asset if (series.symbol or "") in series.tick_sizes else "ticks"
    ax_price.set_ylabel(f"{series.symbol or ''} price ({unit_name})".strip())
    if ax_price.get_legend_handles_labels()[0]:
        ax_price.legend(loc="best", fontsize=9, ncols=2)
    ax_price.grid(True, alpha=0.3)
    ax_price.ticklabel_format(axis="y", useOffset=False, style="plain")

    # --- insurance fund
    if len(series.fund):
        t, v = extended(series.fund)
        ax_fund.plot(xs(t), [a * atom for a in v], drawstyle="steps-post", color="tab:green", linewidth=1.6,
                     label="insurance fund")
        outline = band(series.fund)
        if outline is not None:
            bx, blo, bhi = outline
            ax_fund.fill_between(xs(bx), [a * atom for a in blo], [a * atom for a in bhi], color="tab:green",
                                 alpha=0.25, linewidth=0)
    ax_fund.axhline(series.insurance_fund_start * atom, color="0.5", linestyle=":", linewidth=1.0,
                    label="start")
    for n, ts in enumerate(sorted(series.funding_times)):
        ax_fund.axvline((ts - t0) / per, color="tab:cyan", linestyle="--", linewidth=0.9, alpha=0.8,
                        label="funding settlement" if n == 0 else None)
    ax_fund.set_ylabel(f"insurance fund ({series.asset})")
    ax_fund.legend(loc="best", fontsize=9)
    ax_fund.grid(True, alpha=0.3)
    ax_fund.ticklabel_format(axis="y", useOffset=False, style="plain")

    # --- open positions
    if len(series.positions):
        t, v = extended(series.positions)
        ax_pos.plot(xs(t), v, drawstyle="steps-post", color="tab:brown", linewidth=1.4, label="all symbols")
    if len(series.symbol_positions) and series.symbol_positions.v != series.positions.v:
        t, v = extended(series.symbol_positions)
        ax_pos.plot(xs(t), v, drawstyle="steps-post", color="tab:blue", linewidth=1.0, alpha=0.8,
                    label=series.symbol or "main symbol")
    ax_pos.set_ylabel("open positions")
    ax_pos.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_pos.set_ylim(bottom=0)
    ax_pos.grid(True, alpha=0.3)
    if ax_pos.get_legend_handles_labels()[0]:
        ax_pos.legend(loc="best", fontsize=9)
    ax_pos.set_xlabel(f"virtual time since start ({unit})")
    ax_pos.set_xlim(0, max((end - t0) / per, 1e-9))
    for ax in (ax_price, ax_fund):
        ax.tick_params(labelbottom=False)

    name = title if title is not None else (series.scenario or "run")
    sub = f"{series.symbol or '-'}: index, mark and last price"
    if series.liquidations_elsewhere:
        sub += f"  (+{series.liquidations_elsewhere} liquidations in other symbols)"
    fig.suptitle(f"{name}\n{sub}", fontsize=13)
    fig.savefig(path, format="png", dpi=DPI)
    return path
