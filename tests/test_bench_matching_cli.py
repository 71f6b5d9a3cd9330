"""`python -m bench.matching`: the JSON contract of the foundation issue, the margin run and the latency pass.

Small workloads (the figures themselves are for bench/README.md, not for CI)."""

from __future__ import annotations

import json
from array import array

import pytest

from bench.matching import latency_summary, main, replay_full, replay_timed
from bench.workload import CANCEL, CROSSING, MARKET, PASSIVE, generate
from exchange.engine import Engine


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_the_issue_keys_and_agreeing_counts(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--ops", "3000", "--margin", "--latency")
    for key in ("ops", "seconds", "ops_per_sec", "fills", "traded_qty", "resting_orders", "peak_rss_mib",
                "minimal_ops_per_sec", "ratio_vs_minimal", "margin_ops_per_sec", "margin_slowdown"):
        assert key in out, key
    assert out["ops"] == 3000 and out["rejects"] == 0 and out["fills"] > 0
    assert abs(3000 / out["ops_per_sec"] - out["seconds"]) <= 0.0006  # seconds is rounded to the ms
    ops = list(generate("shallow", 3000, 1))
    kinds = {"passive": sum(op[0] == PASSIVE for op in ops), "cancel": sum(op[0] == CANCEL for op in ops),
             "aggressive": sum(op[0] in (MARKET, CROSSING) for op in ops)}
    for engine in ("full", "margin"):
        rows = out["latency_us"][engine]
        assert {k: rows[k]["ops"] for k in kinds} == kinds
        assert rows["all"]["ops"] == 3000
        for r in rows.values():
            assert 0 < r["p50"] <= r["p90"] <= r["p99"] <= r["p99_9"] <= r["max"]


def test_timed_replay_gives_the_same_events_as_the_timed_loop() -> None:
    w = generate("shallow", 2000, 5)
    a, b = Engine(), Engine()
    replay_full(a, w)
    replay_timed(b, w)
    assert (a.seq, a.next_order_id, sorted(a.orders)) == (b.seq, b.next_order_id, sorted(b.orders))


def test_latency_percentiles_are_nearest_rank_in_microseconds() -> None:
    # 1..1000 µs as ns: p50 is the 501st value (index int(0.5 × 1000)), p99.9 the 1000th
    times = {"passive": array("q", [i * 1000 for i in range(1, 1001)]), "cancel": array("q"),
             "aggressive": array("q", [5_000_000])}
    s = latency_summary(times)
    assert s["passive"] == {"ops": 1000, "mean": 500.5, "p50": 501.0, "p90": 901.0, "p99": 991.0,
                            "p99_9": 1000.0, "max": 1000.0}
    assert "cancel" not in s  # no operations of that kind
    assert s["all"]["ops"] == 1001 and s["all"]["max"] == 5000.0
