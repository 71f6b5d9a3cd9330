"""pytest-benchmark suite for matching: 50,000-operation workloads through the three engines.

    python3 -m pytest bench --benchmark-enable

Not in CI: pyproject's testpaths is tests/ and its addopts disable benchmarks
(with them disabled, each benchmarked function still runs once, as a test).
The workloads are generated once per module, outside the timings; each
round replays a whole workload into a fresh engine made in `setup`.
"""

from __future__ import annotations

import pytest

from bench.matching import replay_full, replay_minimal
from bench.minimal import FloorEngine, MinimalEngine
from bench.workload import CANCEL, Workload, generate, read_workload, write_workload
from exchange.engine import Engine

OPS = 50_000
SEED = 7
ROUNDS = 5


@pytest.fixture(scope="module", params=["shallow", "deep"])
def workload(request: pytest.FixtureRequest) -> Workload:
    w = generate(request.param, OPS, SEED)
    w.max_oid()  # cached now, outside the timings
    return w


def _bench(benchmark, make_engine, replay, workload: Workload) -> dict[str, int]:
    result = benchmark.pedantic(replay, setup=lambda: ((make_engine(), workload), {}), rounds=ROUNDS, iterations=1)
    benchmark.extra_info["ops"] = len(workload)
    if benchmark.stats is not None:  # None when benchmarks are disabled
        benchmark.extra_info["ops_per_sec"] = round(len(workload) / benchmark.stats.stats.median)
    return result


def test_full_engine(benchmark, workload: Workload) -> None:
    result = _bench(benchmark, Engine, replay_full, workload)
    assert result["rejects"] == 0
    assert result["fills"] > 0


def test_minimal_engine(benchmark, workload: Workload) -> None:
    result = _bench(benchmark, MinimalEngine, replay_minimal, workload)
    assert result["unknown_cancels"] == 0


def test_floor_engine(benchmark, workload: Workload) -> None:
    result = _bench(benchmark, FloorEngine, replay_minimal, workload)
    assert result["unknown_cancels"] == 0


# ---------------------------------------------------------------- the workloads themselves (not timed)
def test_engines_make_the_same_fills(workload: Workload) -> None:
    full = replay_full(Engine(), workload)
    for engine in (MinimalEngine(), FloorEngine()):
        other = replay_minimal(engine, workload)
        assert (other["fills"], other["traded_qty"], other["resting_orders"]) == (
            full["fills"], full["traded_qty"], full["resting_orders"])


def test_mix_is_as_specified(workload: Workload) -> None:
    mix = workload.mix()
    assert mix["passive"] == pytest.approx(0.60, abs=0.01)
    assert mix["cancel"] == pytest.approx(0.25, abs=0.01)
    assert mix["market"] + mix["crossing"] == pytest.approx(0.15, abs=0.01)


def test_deep_book_holds_a_thousand_orders() -> None:
    # The deep book fills up over the first ~50,000 operations, so this looks at a longer run.
    stats = generate("deep", 200_000, SEED).stats
    assert stats["resting_min"] >= 1000  # over the second half, sampled every 1,000 ops
    assert stats["max_open_per_account"] < 200  # BTCUSDT's MAX_NUM_ORDERS


def test_generation_is_deterministic() -> None:
    a, b = generate("shallow", 5_000, 3), generate("shallow", 5_000, 3)
    assert list(a) == list(b)
    assert list(a) != list(generate("shallow", 5_000, 4))


def test_file_round_trip(tmp_path, workload: Workload) -> None:
    path = tmp_path / "w.txt"
    write_workload(workload, path)
    back = read_workload(path)
    assert list(back) == list(workload)
    first_cancel = next(op for op in workload if op[0] == CANCEL)
    assert path.read_text().splitlines()[list(workload).index(first_cancel)] == " ".join(map(str, first_cancel))
