"""Matching throughput: a seeded workload through the full engine and through two minimal ones.

    python -m bench.matching [--shape shallow|deep] [--ops N] [--seed S]
                             [--workload FILE] [--write-workload FILE]
                             [--repeat R] [--margin] [--latency] [--json]

The workload is generated (or read) first and kept in compact integer columns;
only the replay is timed. The full engine gets every operation as a msgspec
command Struct (PlaceOrder / CancelOrder), built inside the timed loop as a
gateway would build it, and answers with its events; the harness reads the
first event of a place (the engine's order id, mapped from the workload's oid)
and of a cancel (to count rejects), and the trades of an aggressive order (for
the traded quantity). The minimal engines (bench/minimal.py: `minimal` on the
engine's own OrderBook, `floor` on lean structures of the same design) get the
same operations as plain integers. Orders are spread over 64 accounts (account =
oid % 64 + 1) with the engine's default self-trade prevention.

With --repeat R the three engines replay the workload R times, in turn, each
time from an empty book; the figures are medians (a shared machine is noisy).
Peak RSS is the process's high-water mark (getrusage), workload included.

With --latency, one more replay (after the timed ones, so they are not
disturbed) times every `Engine.apply` call on its own (perf_counter_ns before
and after) and reports percentiles per kind of operation; with --margin, the
full exchange's too.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import sys
import time
from array import array
from pathlib import Path

from bench.minimal import FloorEngine, MinimalEngine
from bench.workload import (
    ACCOUNTS,
    CANCEL,
    CROSSING,
    MARKET,
    PASSIVE,
    SHAPES,
    Workload,
    generate,
    read_workload,
    write_workload,
)
from exchange.assembly import build_exchange
from exchange.commands import CancelOrder, Deposit, PlaceOrder
from exchange.engine import Engine
from exchange.enums import OrderType, Side
from exchange.events import OrderRejected, Trade

SYMBOL = "BTCUSDT"
_SIDES = (Side.BUY, Side.SELL)
_MARKET = OrderType.MARKET


def replay_full(engine: Engine, workload: Workload) -> dict[str, int]:
    """Feed `workload` to `engine` as command Structs; count what came back. The loop that is timed."""
    apply = engine.apply
    ids = array("q", bytes(8 * (workload.max_oid() + 1)))  # workload oid -> engine order id
    sides = _SIDES
    events = rejects = traded = 0
    for t, oid, side, price, qty in workload:
        account = oid % ACCOUNTS + 1
        if t == PASSIVE:
            out = apply(PlaceOrder(account=account, symbol=SYMBOL, side=sides[side], qty=qty, price=price))
            ids[oid] = out[0].order_id  # 0 if it was rejected
        elif t == CANCEL:
            out = apply(CancelOrder(account=account, symbol=SYMBOL, order_id=ids[oid]))
            if type(out[0]) is OrderRejected:
                rejects += 1
        else:
            if t == CROSSING:
                cmd = PlaceOrder(account=account, symbol=SYMBOL, side=sides[side], qty=qty, price=price)
            else:
                cmd = PlaceOrder(account=account, symbol=SYMBOL, side=sides[side], qty=qty, order_type=_MARKET)
            out = apply(cmd)
            ids[oid] = out[0].order_id
            for ev in out:
                if type(ev) is Trade:
                    traded += ev.qty
        events += len(out)
    places = len(workload) - workload.types.count(CANCEL)
    return {
        "events": events,
        "fills": engine.market(SYMBOL).trade_seq,
        "traded_qty": traded,
        "resting_orders": len(engine.orders),
        "rejects": rejects + places - (engine.next_order_id - 1),  # cancels refused + places refused
    }


#: operation type -> the latency group it is reported in
_KIND = {PASSIVE: "passive", CANCEL: "cancel", CROSSING: "aggressive", MARKET: "aggressive"}
_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99_9", 0.999))


def replay_timed(engine: Engine, workload: Workload) -> dict[str, array]:
    """`replay_full`, timing each `apply` call alone (ns), grouped by kind of operation (passive limit, cancel,
    aggressive: market or crossing limit). Building the command is outside the timing."""
    apply = engine.apply
    ns = time.perf_counter_ns
    ids = array("q", bytes(8 * (workload.max_oid() + 1)))
    sides = _SIDES
    times = {kind: array("q") for kind in ("passive", "cancel", "aggressive")}
    for t, oid, side, price, qty in workload:
        account = oid % ACCOUNTS + 1
        if t == CANCEL:
            cmd: PlaceOrder | CancelOrder = CancelOrder(account=account, symbol=SYMBOL, order_id=ids[oid])
        elif t == MARKET:
            cmd = PlaceOrder(account=account, symbol=SYMBOL, side=sides[side], qty=qty, order_type=_MARKET)
        else:
            cmd = PlaceOrder(account=account, symbol=SYMBOL, side=sides[side], qty=qty, price=price)
        t0 = ns()
        out = apply(cmd)
        t1 = ns()
        times[_KIND[t]].append(t1 - t0)
        if t != CANCEL:
            ids[oid] = out[0].order_id
    return times


def latency_summary(times: dict[str, array]) -> dict[str, dict[str, float | int]]:
    """Per kind and for all operations: count, mean and percentiles (nearest rank) and max, in µs."""
    groups = dict(times)
    groups["all"] = array("q", b"".join(a.tobytes() for a in times.values()))
    out: dict[str, dict[str, float | int]] = {}
    for kind, values in groups.items():
        if not values:
            continue
        v = sorted(values)
        n = len(v)
        row: dict[str, float | int] = {"ops": n, "mean": round(sum(v) / n / 1000, 2)}
        for name, q in _PERCENTILES:
            row[name] = round(v[min(n - 1, int(q * n))] / 1000, 2)
        row["max"] = round(v[-1] / 1000, 2)
        out[kind] = row
    return out


def timer_overhead_ns() -> int:
    """The median cost of the timing itself: two back-to-back perf_counter_ns calls."""
    ns = time.perf_counter_ns
    d = []
    for _ in range(10_001):
        t0 = ns()
        d.append(ns() - t0)
    return sorted(d)[len(d) // 2]


def latency(workload: Workload, margin: bool = False) -> dict[str, dict[str, float | int]]:
    """`replay_timed` through a fresh engine (matcher alone, or the full exchange); the summary."""
    engine = margin_engine() if margin else Engine()
    workload.max_oid()
    gc.collect()
    return latency_summary(replay_timed(engine, workload))


def replay_minimal(engine: MinimalEngine | FloorEngine, workload: Workload) -> dict[str, int]:
    """Feed `workload` to a minimal engine (bench/minimal.py) as plain integers."""
    place, cancel = engine.place, engine.cancel
    for t, oid, side, price, qty in workload:
        if t == CANCEL:
            cancel(oid)
        else:
            place(oid, oid % ACCOUNTS + 1, side, price, qty)  # a market order's price is 0
    return {
        "fills": engine.fills,
        "traded_qty": engine.traded_qty,
        "resting_orders": engine.resting(),
        "unknown_cancels": engine.unknown_cancels,
    }


def margin_engine() -> Engine:
    """The full exchange (clearing, risk monitor, liquidation engine) with the workload's 64 accounts funded
    so well that no order is refused for margin: every fill then books positions, fees, wallets and
    liquidation prices, and re-indexes both accounts, as in a live run (deposits are outside the timing)."""
    engine = build_exchange(insurance_fund={"USDT": 10**6 * 10**8})
    for account in range(1, ACCOUNTS + 1):
        engine.apply(Deposit(account=account, asset="USDT", amount=10**12 * 10**8))
    return engine


def run_full(workload: Workload, margin: bool = False) -> dict[str, int | float]:
    """Replay `workload` through a fresh Engine (matcher alone, or with margin); timing and counts."""
    engine = margin_engine() if margin else Engine()
    workload.max_oid()  # computed here, not in the timed loop
    gc.collect()
    t0 = time.perf_counter()
    result: dict[str, int | float] = dict(replay_full(engine, workload))
    result["seconds"] = time.perf_counter() - t0
    return result


def run_minimal(workload: Workload, engine_type: type[MinimalEngine] | type[FloorEngine] = MinimalEngine,
                ) -> dict[str, int | float]:
    """Replay `workload` through a fresh minimal engine; timing and counts."""
    engine = engine_type()
    gc.collect()
    t0 = time.perf_counter()
    result: dict[str, int | float] = dict(replay_minimal(engine, workload))
    result["seconds"] = time.perf_counter() - t0
    return result


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(workload: Workload, repeat: int = 1, margin: bool = False) -> dict[str, object]:
    """Replay the engines `repeat` times, in turn; medians, and the checks that they agree.

    With `margin`, the full exchange (clearing and liquidation engine) replays it too, and its slowdown
    against the margin-free engine of the same run is reported.
    """
    n = len(workload)
    fulls, minis, floors, margins = [], [], [], []
    for _ in range(repeat):
        fulls.append(run_full(workload))
        minis.append(run_minimal(workload, MinimalEngine))
        floors.append(run_minimal(workload, FloorEngine))
        if margin:
            margins.append(run_full(workload, margin=True))
    full = fulls[-1]
    if margin:
        for key in ("fills", "traded_qty", "resting_orders", "rejects"):
            if full[key] != margins[-1][key]:
                raise AssertionError(f"margin run disagrees on {key}: {full[key]} vs {margins[-1][key]}")
    for other, name in ((minis[-1], "minimal"), (floors[-1], "floor")):
        for key in ("fills", "traded_qty", "resting_orders"):
            if full[key] != other[key]:
                raise AssertionError(f"engines disagree on {key}: full {full[key]}, {name} {other[key]}")
    full_rates = [n / r["seconds"] for r in fulls]
    mini_rates = [n / r["seconds"] for r in minis]
    floor_rates = [n / r["seconds"] for r in floors]
    seconds = statistics.median(r["seconds"] for r in fulls)
    return {
        "ops": n,
        "seconds": round(seconds, 3),
        "ops_per_sec": round(statistics.median(full_rates)),
        "minimal_ops_per_sec": round(statistics.median(mini_rates)),
        # Ratios run by run (the engines of one run share the machine's mood), then the median.
        "ratio_vs_minimal": round(statistics.median(f / m for f, m in zip(full_rates, mini_rates, strict=True)), 3),
        "floor_ops_per_sec": round(statistics.median(floor_rates)),
        "ratio_vs_floor": round(statistics.median(f / m for f, m in zip(full_rates, floor_rates, strict=True)), 3),
        "runs_ops_per_sec": [round(r) for r in full_rates],
        "runs_minimal_ops_per_sec": [round(r) for r in mini_rates],
        "runs_floor_ops_per_sec": [round(r) for r in floor_rates],
        "events": full["events"],
        "fills": full["fills"],
        "traded_qty": full["traded_qty"],
        "resting_orders": full["resting_orders"],
        "rejects": full["rejects"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **_margin_figures(n, fulls, margins),
    }


def _margin_figures(n: int, fulls: list[dict[str, int | float]], margins: list[dict[str, int | float]]
                    ) -> dict[str, object]:
    if not margins:
        return {}
    rates = [n / r["seconds"] for r in margins]
    full_rates = [n / r["seconds"] for r in fulls]
    return {
        "margin_ops_per_sec": round(statistics.median(rates)),
        # slowdown = margin-free rate / margin rate, run by run, then the median (target: under 2)
        "margin_slowdown": round(statistics.median(f / m for f, m in zip(full_rates, rates, strict=True)), 3),
        "margin_events": margins[-1]["events"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.matching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="shallow")
    parser.add_argument("--ops", type=int, default=1_000_000, help="operations to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workload", metavar="FILE", help="replay this workload file instead of generating one")
    parser.add_argument("--write-workload", metavar="FILE", help="also write the workload to FILE")
    parser.add_argument("--repeat", type=int, default=1, help="replays of each engine; medians reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--margin", action="store_true",
                        help="also replay through the full exchange (margin, positions, liquidation monitor) "
                             "and report its slowdown against the margin-free engine")
    parser.add_argument("--latency", action="store_true",
                        help="also time every apply() call alone in one more replay: percentiles per kind of "
                             "operation (with --margin, the full exchange's too)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    t0 = time.perf_counter()
    if args.workload:
        workload = read_workload(args.workload)
        shape = f"file:{Path(args.workload).name}"
    else:
        workload = generate(args.shape, args.ops, args.seed)
        shape = args.shape
    gen_seconds = time.perf_counter() - t0
    if args.write_workload:
        write_workload(workload, args.write_workload)
    result: dict[str, object] = {"shape": shape, "seed": None if args.workload else args.seed}
    result.update(benchmark(workload, args.repeat, args.margin))
    if args.latency:
        result["latency_us"] = {"full": latency(workload)}
        if args.margin:
            result["latency_us"]["margin"] = latency(workload, margin=True)
        result["timer_overhead_ns"] = timer_overhead_ns()
    result["mix"] = {k: round(v, 4) for k, v in workload.mix().items()}
    result["book"] = workload.stats
    result["workload_seconds"] = round(gen_seconds, 2)
    result["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    result["cpu"] = f"{cpu_model()} ×{_cpu_count()}"
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"shape {shape}, {result['ops']:,} ops, {result['python']}, {result['cpu']}")
    mix = result["mix"]
    print("mix: " + ", ".join(f"{k} {v:.1%}" for k, v in mix.items()))  # type: ignore[union-attr]
    if workload.stats:
        st = workload.stats
        print(f"book (2nd half, model): resting {st['resting_min']}..{st['resting_max']} "
              f"(mean {st['resting_mean']}) on ~{st['levels_mean']} levels")
    print(f"full engine:    {result['ops_per_sec']:>10,} ops/s  ({result['seconds']} s; "
          f"runs {', '.join(f'{r:,}' for r in result['runs_ops_per_sec'])})")  # type: ignore[attr-defined]
    print(f"minimal engine: {result['minimal_ops_per_sec']:>10,} ops/s  (the engine's OrderBook, no validation/events)"
          f"  ratio full/minimal {result['ratio_vs_minimal']}")
    print(f"floor engine:   {result['floor_ops_per_sec']:>10,} ops/s  (lean dict+SortedList+deque)"
          f"  ratio full/floor {result['ratio_vs_floor']}")
    print(f"events {result['events']:,}, fills {result['fills']:,}, traded {result['traded_qty']:,} lots, "
          f"resting at end {result['resting_orders']:,}, rejects {result['rejects']}")
    if args.margin:
        print(f"with margin:    {result['margin_ops_per_sec']:>10,} ops/s  (clearing + liquidation monitor, "
              f"{result['margin_events']:,} events)  slowdown {result['margin_slowdown']}x")
    if args.latency:
        print(f"latency of one apply() call, µs (perf_counter_ns around it; the timing itself costs "
              f"{result['timer_overhead_ns']} ns):")
        print(f"  {'engine':<7} {'kind':<11} {'ops':>9} {'mean':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
              f"{'p99.9':>7} {'max':>9}")
        for engine_name, rows in result["latency_us"].items():  # type: ignore[attr-defined]
            for kind, r in rows.items():
                print(f"  {engine_name:<7} {kind:<11} {r['ops']:>9,} {r['mean']:>7} {r['p50']:>7} {r['p90']:>7} "
                      f"{r['p99']:>7} {r['p99_9']:>7} {r['max']:>9}")
    print(f"peak RSS {result['peak_rss_mib']} MiB")
    return 0


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
