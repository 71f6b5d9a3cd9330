"""bench.mqtt's delivery-latency measurement (`--latency`), against a real broker (tests/mqtt_broker.py)."""

from __future__ import annotations

import pytest

from bench.mqtt import Collector, latency_run
from bench.random_flow import flow_for_events
from tests.mqtt_broker import MqttBroker


@pytest.mark.parametrize(("mode", "window"), [("batch", None), ("batch", 0.0), ("event", None)])
def test_every_event_is_timed_once_and_after_it_was_made(broker: MqttBroker, mode: str, window: float | None) -> None:
    cmds = flow_for_events(11, 1_500)
    kw = {} if window is None else {"batch_window": window}
    r = latency_run(broker.url, cmds, mode=mode, qos=1, events_per_sec=3_000, tag=f"t-lat-{mode}-{window}", **kw)
    assert r["events"] >= 1_500 and r["delivered"] == r["events"] and r["lost"] == 0 and r["gaps"] == 0
    # an event cannot arrive before the engine made it (one monotonic clock for both processes)
    assert 0 <= r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["p99_9_ms"] <= r["max_ms"]
    assert r["batch_window_ms"] == (None if mode == "event" else 20.0 if window is None else 0.0)


def test_collector_times_the_first_copy_of_each_event_only() -> None:
    c = Collector("p/#", latency=True)
    c.on_message("p/a", b'{"schema":1,"topic_seq":1,"type":"Trade","seq":1}')
    c.on_message("p/b", b'{"schema":1,"topic_seq":1,"type":"Trade","seq":1}')  # the same event on another topic
    c.on_message("p/a", b'{"schema":1,"topic_seq":2,"type":"Trade","seq":2}')
    assert list(c.arrival_seq or []) == [1, 2] and len(c.arrival_ns) == 2
    assert c.arrival_ns[0] <= c.arrival_ns[1]
    assert Collector("p/#").arrival_seq is None  # off unless asked for
