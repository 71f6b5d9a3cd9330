"""The MQTT sink against a real broker over TCP (a private Mosquitto, else amqtt), never a mocked client.

The end-to-end checks use an independent paho-mqtt subscriber in a child process (bench.mqtt's
SubscriberProcess): it subscribes to everything under the run's prefix and checks, per topic, that
topic_seq goes 1, 2, 3... without a gap and that seq increases, and that every engine event arrived.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from bench.mqtt import SubscriberProcess
from bench.random_flow import flow_for_events
from exchange.commands import SetMarkPrice
from exchange.engine import Engine
from exchange.enums import RejectReason, Side
from exchange.events import Event, MarkPriceUpdated, OrderRejected, Trade
from exchange.journal import JournalSink, replay
from exchange.mqtt_sink import MqttSink, parse_mqtt_url
from exchange.runtime import Runtime
from exchange.sinks import OverflowPolicy
from exchange.topics import (
    BATCH_PREFIX,
    ROUTES,
    Codec,
    Router,
    TopicState,
    decode_payload,
    event_tag,
    event_types,
    infer_templates,
)
from tests.mqtt_broker import broker_kind

ROOT = Path(__file__).resolve().parents[1]
needs_broker = pytest.mark.skipif(broker_kind() is None, reason="no MQTT broker: install mosquitto or amqtt")


_counter = iter(range(10**6))


def prefix() -> str:
    return f"t{os.getpid()}x{next(_counter)}"


async def feed(sink_list: list, cmds: list, **kw) -> Runtime:
    rt = Runtime(Engine(), sinks=sink_list, **kw)
    await rt.start()
    try:
        await rt.submit_many(cmds)
        await rt.drain()
    finally:
        await rt.stop()
    return rt


def check_delivery(res: dict, events: int) -> None:
    assert res["missing"] == 0, res
    assert res["distinct"] == events
    assert res["gaps"] == 0, res.get("gap_list")
    assert res["order_errors"] == 0 and res["undecodable"] == 0


# ------------------------------------------------------------------ topics and payloads (no broker)
def test_routes_public_and_private_topics():
    r = Router("pfx")
    t = Trade(5, 2, 100, "BTCUSDT", 1, 800000, 3, Side.BUY, 10, 7, 9, 8, 0, 0)
    assert [s.name for s in r.route(t)] == ["pfx/market/BTCUSDT/trades", "pfx/account/7/fills", "pfx/account/8/fills"]
    self_trade = Trade(5, 2, 100, "BTCUSDT", 1, 800000, 3, Side.BUY, 10, 7, 9, 7, 0, 0)
    assert len(r.route(self_trade)) == 2
    mark = r.route(MarkPriceUpdated(1, 1, 1, "ETHUSDT", 5))
    assert [s.name for s in mark] == ["pfx/market/ETHUSDT/mark"] and mark[0].retain
    rej = OrderRejected(1, 0, 1, "", 3, "PlaceOrder", RejectReason.UNKNOWN_SYMBOL)
    assert [s.name for s in r.route(rej)] == ["pfx/account/3/orders"]
    assert not r.route(t)[0].retain


def test_every_event_type_has_topics_and_none_that_names_an_account_is_only_public():
    r = Router("p")
    from exchange.topics import example_event

    for cls in event_types():
        states = r.route(example_event(cls))
        assert states, cls
        fields = cls.__struct_fields__
        if event_tag(cls) not in ROUTES and any(f == "account" or f.endswith("_account") for f in fields):
            assert any("/account/" in s.name for s in states), cls


def test_unknown_event_types_get_the_documented_default():
    class LiquidationOrderX(Event, tag=True):
        symbol: str
        price: int

    class FundingRateX(Event, tag=True):
        symbol: str

    class WalletThingX(Event, tag=True):
        account: int
        symbol: str

    class NothingX(Event, tag=True):
        x: int

    assert infer_templates(LiquidationOrderX) == ("market/{symbol}/liquidations", "exchange/liquidations")
    assert infer_templates(FundingRateX) == ("market/{symbol}/funding",)
    assert infer_templates(WalletThingX) == ("account/{account}/balances",)  # private, never market/
    assert infer_templates(NothingX) == ("exchange/events",)
    r = Router("p")
    st = r.route(FundingRateX(1, 1, 1, "BTCUSDT"))[0]
    assert st.name == "p/market/BTCUSDT/funding" and st.retain
    assert event_tag(NothingX) not in ROUTES


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_payloads_carry_schema_seq_and_topic_seq_in_both_modes(fmt):
    c = Codec(fmt)
    t = Trade(5, 2, 100, "BTCUSDT", 1, 800000, 3, Side.BUY, 10, 7, 9, 8, 0, 0)
    one = decode_payload(c.single(c.encode(t), 17), fmt)
    assert one == [{"schema": 1, "topic_seq": 17, **msgspec.to_builtins(t), "type": "Trade"}]
    st = TopicState("p/market/BTCUSDT/trades", False)
    t2 = Trade(9, 3, 100, "BTCUSDT", 2, 800001, 3, Side.BUY, 10, 7, 9, 8, 0, 0)
    payload = c.batch(st, [c.encode(t), c.encode(t2)], 4)
    assert payload.startswith(BATCH_PREFIX[fmt])
    env = (msgspec.json.decode if fmt == "json" else msgspec.msgpack.decode)(payload)
    assert list(env) == ["type", "schema", "topic", "count", "first_seq", "last_seq", "first_topic_seq",
                         "last_topic_seq", "events"]
    assert (env["type"], env["schema"], env["topic"], env["count"], env["first_seq"], env["last_seq"],
            env["first_topic_seq"], env["last_topic_seq"]) == ("batch", 1, st.name, 2, 5, 9, 4, 5)
    evs = decode_payload(payload, fmt)
    assert [(e["topic_seq"], e["seq"], e["schema"]) for e in evs] == [(4, 5, 1), (5, 9, 1)]
    # the same bytes whether the events come encoded (msgspec.Raw, bytes) or as Structs: one msgspec call
    raws = (msgspec.json if fmt == "json" else msgspec.msgpack).decode(c.encode([t, t2]), type=list[msgspec.Raw])
    assert c.batch(st, raws, 4) == payload == c.batch(st, [t, t2], 4)
    # the publisher's path: the encoded list cut into parts (JSON: at the separator between two events)
    parts = c.parts(c.encode([t, t2]), 2)
    assert c.batch_of_parts(st, parts, 4) == payload
    assert c.single_of_part(parts[1], 17) == c.single(c.encode(t2), 17)


def test_json_parts_survive_strings_and_nested_objects_that_look_like_the_separator():
    """A part is an event's JSON minus its leading `{"type":"`; a client id holding the separator's
    characters is escaped inside its string, and a nested object whose first key is "type" (no event type has
    one today) makes the cut count wrong, which falls back to a full decode."""
    c = Codec("json")
    tricky = ',{"type":"x"}'
    evs = [{"type": "A", "seq": 1, "client_order_id": tricky},
           {"type": "B", "seq": 2, "nested": [{"type": "C", "n": 1}, {"type": "D", "n": 2}]},
           {"type": "E", "seq": 3}]
    parts = c.parts(c.encode(evs), len(evs))
    assert [msgspec.json.decode(b'{"type":"' + p) for p in parts] == evs
    payload = c.batch_of_parts(TopicState("p/x", False), parts, 1)
    assert [(e["type"], e["seq"], e["topic_seq"]) for e in decode_payload(payload)] == [("A", 1, 1), ("B", 2, 2),
                                                                                         ("E", 3, 3)]


class _NullClient:
    """Acknowledges every publish at once and keeps what was published (Publisher unit tests, no broker)."""

    def __init__(self, *args, **kw) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self._lost = None

    async def connect(self) -> None:
        self._lost = asyncio.get_running_loop().create_future()

    def publish(self, topic, payload, qos, retain):
        self.sent.append((topic, payload, qos, retain))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def lost(self):
        return self._lost

    async def close(self) -> None:
        pass


def _publish_through_worker_path(cmds, **cfg) -> tuple[list[tuple[str, bytes, int, bool]], int]:
    """The engine side's frames (`_WorkerProxy.encode_frame`) fed to a Publisher, as the worker process does."""
    from exchange.mqtt_sink import MqttConfig, Publisher, _WorkerProxy

    config = MqttConfig(url="mqtt://127.0.0.1:1", prefix="p", **cfg)
    engine = Engine()
    steps = [(c, engine.apply(c)) for c in cmds]
    client = _NullClient()
    proxy = _WorkerProxy(config)

    async def main() -> int:
        pub = Publisher(config, lambda *a, **k: client)
        await pub.start()
        for i in range(0, len(steps), 100):
            parts = proxy.encode_frame(steps[i:i + 100])
            if parts:
                pub.ingest_frame(memoryview(b"".join(parts))[5:])
                if pub.has_pending:
                    pub.close_window()
        await pub.close()
        return pub.engine_events

    n = asyncio.run(main())
    return client.sent, n


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("cfg", [
    {"mode": "batch", "batch_window": 60.0, "batch_max_events": 50},
    {"mode": "batch", "batch_window": 60.0, "batch_max_events": 1000, "batch_max_bytes": 4000},
    {"mode": "batch", "batch_window": 0.0},
    {"mode": "event"},
])
def test_worker_frames_give_every_event_once_per_topic_in_order(cfg, fmt):
    """Engine side routes (topic-set ids) and encodes once; the worker splits and batches: per topic, the
    events of the engine in order, topic_seq 1, 2, 3... without holes, batches within their size limits."""
    cmds = flow_for_events(31, 3_000)
    sent, n = _publish_through_worker_path(cmds, payload_format=fmt, **cfg)
    engine, router = Engine(), Router("p")
    want: dict[str, list[int]] = {}
    for c in cmds:
        for ev in engine.apply(c):
            for st in router.route(ev):
                want.setdefault(st.name, []).append(ev.seq)
    assert n == engine.seq
    got: dict[str, list[tuple[int, int]]] = {}
    for topic, payload, _qos, _retain in sent:
        if cfg["mode"] == "batch":
            assert payload.startswith(BATCH_PREFIX[fmt])
            assert len(decode_payload(payload, fmt)) <= cfg.get("batch_max_events", 1000)
            if "batch_max_bytes" in cfg:
                assert len(payload) <= cfg["batch_max_bytes"] + 500  # (the envelope around the events)
        got.setdefault(topic, []).extend((e["topic_seq"], e["seq"]) for e in decode_payload(payload, fmt))
    assert {t: [s for _ts, s in v] for t, v in got.items()} == want
    for v in got.values():
        assert [ts for ts, _s in v] == list(range(1, len(v) + 1))
    if cfg["mode"] == "batch" and cfg["batch_window"] > 0:
        # batched: far fewer messages than events (with the 4,000-byte cap, about 10 events a message)
        assert len(sent) < sum(map(len, want.values())) / 8


def test_docs_list_every_event_type_with_an_example():
    text = (ROOT / "docs" / "events.md").read_text()
    for cls in event_types():
        if "<locals>" in cls.__qualname__ or cls.__module__.split(".")[0] == "tests":
            continue  # defined by a test
        tag = event_tag(cls)
        assert f"### {tag}\n" in text, f"docs/events.md lacks {tag}: `python -m exchange.topics {tag}` writes it"
    assert '"type":"batch"' in text and "topic_seq" in text


def test_parse_url():
    assert parse_mqtt_url("mqtt://10.0.0.1:1884") == ("10.0.0.1", 1884)
    assert parse_mqtt_url("localhost") == ("localhost", 1883)
    with pytest.raises(ValueError):
        parse_mqtt_url("http://x:1")


def test_tail_reports_gaps_and_skips_duplicates():
    from exchange.cli_tail import Tail

    c = Codec("json")
    t = Trade(5, 2, 100, "BTCUSDT", 1, 800000, 3, Side.BUY, 10, 7, 9, 8, 0, 0)
    out = io.StringIO()
    tail = Tail(out)
    for n in (1, 2, 2, 5):
        tail.message("p/market/BTCUSDT/trades", c.single(c.encode(t), n))
    text = out.getvalue()
    assert "GAP p/market/BTCUSDT/trades: topic_seq 3..4 missing (2 events)" in text
    assert text.count("Trade") == 3
    assert "1 gaps (2 events missing), 1 duplicates" in tail.summary()


def test_example_subscriber_reads_both_forms():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import subscriber  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    c = Codec("json")
    t = Trade(5, 2, 100, "BTCUSDT", 1, 800000, 3, Side.BUY, 10, 7, 9, 8, 0, 0)
    st = TopicState("p/x", False)
    batch = c.batch(st, [c.encode(t), c.encode(t)], 3)
    assert [e["topic_seq"] for e in subscriber.events_of(batch)] == [3, 4]
    assert subscriber.events_of(c.single(c.encode(t), 9))[0]["topic_seq"] == 9


# ------------------------------------------------------------------ end to end, real broker
@needs_broker
def test_batch_qos1_100k_events_all_delivered_in_order_without_gaps(broker, tmp_path):
    cmds = flow_for_events(21, 100_000)
    pfx = prefix()
    sub = SubscriberProcess(broker.host, broker.port, f"{pfx}/#", qos=1)
    try:
        journal = tmp_path / "j.jsonl"
        sink = MqttSink(broker.url, prefix=pfx, qos=1, mode="batch")
        t0 = time.monotonic()
        rt = asyncio.run(feed([JournalSink(journal), sink], cmds))
        res = sub.expect(rt.events, 120)
    finally:
        sub.close()
    assert rt.events >= 100_000
    check_delivery(res, rt.events)
    assert res["topics"] >= 40 and res["duplicates"] == 0
    st = sink.stats()
    assert st["lost_events"] == 0 and st["held_events"] == 0 and st["engine_events"] == rt.events
    assert replay(journal).ok
    print(f"\n{rt.events} events, {st['messages_sent']} messages, {res['done_at'] - t0:.2f} s end to end")


@needs_broker
@pytest.mark.parametrize("subscriber", ["paho", "raw"])
def test_batch_qos1_survives_a_broker_restart_in_the_middle(broker, caplog, subscriber):
    if not broker.persistent:
        pytest.skip("the fallback broker keeps no sessions across a restart")
    cmds = flow_for_events(22, 120_000)
    pfx = prefix()
    # a persistent session (fixed client id, clean session off) so the broker keeps our queue over its restart
    sub = SubscriberProcess(broker.host, broker.port, f"{pfx}/#", qos=1, client_id=f"{pfx}-sub",
                            clean_session=False, subscriber=subscriber)
    caplog.set_level(logging.INFO, logger="exchange.mqtt")
    restarted = threading.Event()
    sink = MqttSink(broker.url, prefix=pfx, qos=1, mode="batch", reconnect_max=0.5)

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[sink])
        await rt.start()
        try:
            third = len(cmds) // 3
            await rt.submit_many(cmds[:third])
            await rt.drain()
            await asyncio.sleep(0.3)  # some of it published

            def bounce() -> None:
                broker.restart(down_for=1.0)
                restarted.set()

            loop = asyncio.get_running_loop()
            bouncing = loop.run_in_executor(None, bounce)
            await rt.submit_many(cmds[third:2 * third])  # produced while the broker is down
            await bouncing
            await rt.submit_many(cmds[2 * third:])
            await rt.drain()
        finally:
            await rt.stop()
        return rt

    try:
        rt = asyncio.run(main())
        res = sub.expect(rt.events, 180)
    finally:
        sub.close()
    assert restarted.is_set() and broker.running
    st = sink.stats()
    assert st["reconnects"] >= 1 and st["lost_events"] == 0
    check_delivery(res, rt.events)
    assert res["connects"] >= 2
    lines = [r.getMessage() for r in caplog.records if "reconnected" in r.getMessage()]
    assert lines and "s down" in lines[0] and "held" in lines[0] and "events" in lines[0]
    print("\n" + lines[0])


@needs_broker
@pytest.mark.parametrize("qos", [0, 1])
def test_event_mode_one_message_per_event_and_topic(broker, qos):
    cmds = flow_for_events(23, 3_000)
    pfx = prefix()
    sub = SubscriberProcess(broker.host, broker.port, f"{pfx}/#", qos=qos)
    try:
        sink = MqttSink(broker.url, prefix=pfx, qos=qos, mode="event")
        rt = asyncio.run(feed([sink], cmds))
        res = sub.expect(rt.events, 120)
        if qos == 1:
            # every distinct event is in; copies of the last ones on their other topics may still be on the
            # way: ask again (bounded) until every message the broker acknowledged has arrived
            deadline = time.monotonic() + 30
            while res["copies"] < sink.stats()["messages_sent"] and time.monotonic() < deadline:
                time.sleep(0.2)
                res = sub.expect(rt.events, 1)
    finally:
        sub.close()
    check_delivery(res, rt.events)
    assert res["messages"] == res["copies"]  # one event per message
    if qos == 1:
        assert res["copies"] == sink.stats()["messages_sent"]


@needs_broker
@pytest.mark.parametrize("worker", ["inline", "process"])
def test_batch_per_engine_step_msgpack_and_inline(broker, worker):
    cmds = flow_for_events(24, 5_000)
    pfx = prefix()
    # (the bench's raw-socket subscriber in one of the two runs, paho in the other)
    sub = SubscriberProcess(broker.host, broker.port, f"{pfx}/#", qos=1, fmt="msgpack",
                            subscriber="raw" if worker == "process" else "paho")
    try:
        sink = MqttSink(broker.url, prefix=pfx, qos=1, mode="batch", batch_window=0, payload_format="msgpack",
                        worker=worker)
        rt = asyncio.run(feed([sink], cmds))
        res = sub.expect(rt.events, 120)
    finally:
        sub.close()
    check_delivery(res, rt.events)
    # window 0: a message never mixes two engine steps
    assert sink.stats()["messages_sent"] >= sum(1 for c in cmds) // 2


@needs_broker
def test_retained_mark_price_reaches_a_late_subscriber_at_once(broker):
    import paho.mqtt.client as mqtt

    pfx = prefix()
    cmds = [SetMarkPrice(symbol="BTCUSDT", price=800_000), SetMarkPrice(symbol="BTCUSDT", price=800_123)]
    asyncio.run(feed([MqttSink(broker.url, prefix=pfx, qos=1, mode="event")], cmds))
    got: list = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    flt = f"{pfx}/market/+/mark"

    def on_message(client, userdata, msg) -> None:
        if mqtt.topic_matches_sub(flt, msg.topic):  # amqtt may send other retained topics too
            got.append(msg)
            done.set()

    c.on_message = on_message
    c.connect(broker.host, broker.port)
    c.subscribe(flt, qos=1)
    c.loop_start()
    try:
        assert done.wait(10)
    finally:
        c.loop_stop()
        c.disconnect()
    ev = decode_payload(got[0].payload)[-1]
    assert got[0].retain and ev["mark_price"] == 800_123 and ev["topic_seq"] == 2


@needs_broker
def test_full_outbox_with_the_drop_policy_is_counted_and_told_to_subscribers(broker, caplog):
    """A stalled sink (its broker is gone): the drop policy keeps the engine going; the gap is counted,
    logged, shows as topic_seq holes and is announced on exchange/system once the broker is back."""
    if not broker.persistent:
        pytest.skip("needs the broker to keep the subscriber's session over a restart")
    cmds = flow_for_events(25, 20_000)
    pfx = prefix()
    sub = SubscriberProcess(broker.host, broker.port, f"{pfx}/#", qos=1, client_id=f"{pfx}-s", clean_session=False)
    caplog.set_level(logging.INFO)
    sink = MqttSink(broker.url, prefix=pfx, qos=1, mode="batch", worker="inline", buffer_events=2_000,
                    capacity=1_000, policy=OverflowPolicy.DROP, reconnect_max=0.2)

    async def main() -> tuple[Runtime, float]:
        rt = Runtime(Engine(), sinks=[sink], burst=64)
        await rt.start()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, broker.stop)
            t0 = time.monotonic()
            await rt.submit_many(cmds[:15_000])
            await rt.drain()  # the engine is not held up by the stalled sink
            took = time.monotonic() - t0
            await loop.run_in_executor(None, broker.start)
            while sink.stats()["held_events"] or rt.runners[0].queue.depth:
                await asyncio.sleep(0.05)
            await rt.submit_many(cmds[15_000:])  # the topics go on: subscribers see the holes
            await rt.drain()
        finally:
            await rt.stop()
        return rt, took

    try:
        rt, took = asyncio.run(main())
        q = rt.stats()["sinks"]["mqtt"]["queue"]
        res = sub.expect(rt.events - q["dropped_events"], 60, total=rt.events)
    finally:
        sub.close()
    assert q["dropped_events"] > 0 and q["gaps"] >= 1 and q["blocked_times"] == 0
    assert took < 30
    assert res["missing"] == q["dropped_events"], res["missing_ranges"]  # exactly the dropped events are missing
    assert res["gaps"] >= 1 and res["order_errors"] == 0  # and subscribers see where
    assert sink.stats()["gap_notices"] == q["gaps"]
    notices = [n for n in res["notices"] if n["type"] == "Gap"]  # and why, on exchange/system
    assert notices and all(n["topic"] == f"{pfx}/exchange/system" for n in notices)
    assert sum(n["count"] for n in notices) == q["dropped_events"]
    assert any("dropped events seq" in r.getMessage() for r in caplog.records)


@needs_broker
def test_exchange_tail_prints_events_and_counts(broker, tmp_path):
    pfx = prefix()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange", "tail", "market/#", "--mqtt", broker.url, "--mqtt-prefix", pfx,
         "--count", "5", "--timeout", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.5)  # let it subscribe
    asyncio.run(feed([MqttSink(broker.url, prefix=pfx, qos=1, mode="event")], flow_for_events(26, 200)))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) >= 5 and lines[0].startswith(f"{pfx}/market/") and " #1 " in lines[0]
    assert "0 gaps" in err


def test_sink_refuses_a_broker_that_is_not_there():
    from tests.mqtt_broker import free_port

    async def main() -> None:
        rt = Runtime(Engine(), sinks=[MqttSink(f"mqtt://127.0.0.1:{free_port()}", connect_timeout=2)])
        await rt.start()

    with pytest.raises(ConnectionError):
        asyncio.run(main())
