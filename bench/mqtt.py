"""`python -m bench.mqtt`: events per second from the engine through an MQTT broker to a subscriber.

Every figure is end to end: a seeded random order flow (bench/random_flow.py)
goes through the real Engine inside the Runtime, the MQTT sink publishes to
the broker, and an independent subscriber (paho-mqtt, in a child process)
receives every topic (`PREFIX/#`) and checks per-topic sequence numbers. A
run's rate is engine events / (time the subscriber received the last event
- time the first command was submitted). Runs:

* batch mode at QoS 1 and QoS 0, event mode at QoS 1 and QoS 0;
* raw aiomqtt: the same payloads the event mode publishes, one by one
  (`await client.publish(...)` per message) on a single connection, to the
  same subscriber (messages per second);
* the engine inside the Runtime with no sink, and with the MQTT sink
  attached (batch, QoS 1): the engine's own rate (events applied per second
  of the engine task, sink back-pressure included) gives
  `engine_with_sink_ratio`.

It starts its own private broker (Mosquitto, else amqtt) unless `--broker
mqtt://HOST:PORT` is given. `--json` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from bench.random_flow import flow_for_events
from exchange.commands import Command
from exchange.engine import Engine
from exchange.mqtt_sink import MqttSink, parse_mqtt_url
from exchange.runtime import Runtime
from exchange.topics import Codec, Router


# --------------------------------------------------------------------------- the independent subscriber
class _Seq(msgspec.Struct):
    seq: int


class _Probe(msgspec.Struct):
    type: str = ""
    seq: int = 0
    topic_seq: int = 0
    first_topic_seq: int = 0
    events: list[_Seq] | None = None


class Collector:
    """A paho-mqtt subscriber (its own network thread) that checks what it receives.

    Per topic: topic_seq must go 1, 2, 3... (a lower or equal one is a
    duplicate and is skipped; a jump is a gap), and the engine's seq must
    increase. Across topics: which engine seqs arrived at least once.
    """

    def __init__(self, host: str, port: int, topic_filter: str, *, qos: int = 1, client_id: str = "",
                 clean_session: bool = True, fmt: str = "json") -> None:
        import paho.mqtt.client as mqtt

        self.topic_filter, self.qos = topic_filter, qos
        self._matches = mqtt.topic_matches_sub
        self._decode = msgspec.json.Decoder(_Probe).decode if fmt == "json" else msgspec.msgpack.Decoder(_Probe).decode
        self.last_topic_seq: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.seen = bytearray(1 << 16)
        self.distinct = 0
        self.copies = 0  # event copies accepted (after duplicates were skipped)
        self.messages = 0
        self.duplicates = 0
        self.gaps: list[tuple[str, int, int]] = []
        self.order_errors = 0
        self.connects = 0
        self.undecodable = 0
        self.expected: int | None = None
        self.done_at: float | None = None
        self.first_at: float | None = None
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.connects += 1
        client.subscribe(self.topic_filter, qos=self.qos)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if not self._matches(self.topic_filter, msg.topic):
            return  # a broker bug (amqtt sends some retained messages to filters they do not match)
        try:
            p = self._decode(msg.payload)
        except msgspec.DecodeError:
            with self._lock:
                self.undecodable += 1
            return
        topic = msg.topic
        with self._lock:
            self.messages += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
            if p.events is not None:  # a batch
                first, seqs = p.first_topic_seq, p.events
            else:
                first, seqs = p.topic_seq, [p]
            last = self.last_topic_seq.get(topic, 0)
            skip = 0
            if first <= last:  # (partly) a duplicate
                skip = last + 1 - first
                self.duplicates += min(skip, len(seqs))
                if skip >= len(seqs):
                    return
            elif first != last + 1:
                self.gaps.append((topic, last + 1, first - 1))
            self.last_topic_seq[topic] = first + len(seqs) - 1
            prev = self.last_seq.get(topic, 0)
            if p.type == "Gap":
                return
            seen = self.seen
            top = max(ev.seq for ev in seqs)
            if top >= len(seen):
                seen.extend(bytes(max(top + 1 - len(seen), len(seen))))
            fresh = 0
            for ev in seqs[skip:] if skip else seqs:
                s = ev.seq
                if s <= prev:
                    self.order_errors += 1
                prev = s
                if not seen[s]:
                    seen[s] = 1
                    fresh += 1
            self.distinct += fresh
            self.last_seq[topic] = prev
            self.copies += len(seqs) - skip
            if self.expected is not None and self.distinct >= self.expected and self.done_at is None:
                self.done_at = time.monotonic()
                self.done.set()

    def expect(self, n: int) -> None:
        with self._lock:
            self.expected = n
            if self.distinct >= n and self.done_at is None:
                self.done_at = time.monotonic()
                self.done.set()

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def missing(self, n: int) -> int:
        return sum(1 for s in range(1, n + 1) if s >= len(self.seen) or not self.seen[s])

    def missing_ranges(self, n: int, limit: int = 20) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        start = None
        for s in range(1, n + 2):
            miss = s <= n and (s >= len(self.seen) or not self.seen[s])
            if miss and start is None:
                start = s
            elif not miss and start is not None:
                out.append((start, s - 1))
                start = None
                if len(out) >= limit:
                    break
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def result(self) -> dict[str, Any]:
        with self._lock:
            return {
                "messages": self.messages, "distinct": self.distinct, "copies": self.copies,
                "duplicates": self.duplicates, "gaps": len(self.gaps),
                "gap_events": sum(b - a + 1 for _, a, b in self.gaps),
                "order_errors": self.order_errors, "done_at": self.done_at, "first_at": self.first_at,
                "topics": len(self.last_topic_seq), "connects": self.connects, "undecodable": self.undecodable,
            }


def _collector_main(conn: Any, host: str, port: int, topic_filter: str, qos: int, fmt: str, client_id: str,
                    clean_session: bool) -> None:
    c = Collector(host, port, topic_filter, qos=qos, fmt=fmt, client_id=client_id, clean_session=clean_session)
    c.subscribed.wait(10)
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "expect":
            c.expect(cmd[1])
            c.wait(cmd[2])
            res = c.result()
            res["missing"] = c.missing(cmd[3] or cmd[1])
            res["gap_list"] = c.gaps[:20]
            res["missing_ranges"] = c.missing_ranges(cmd[3] or cmd[1])
            conn.send(res)
        elif cmd[0] == "stop":
            c.close()
            conn.send("bye")
            return


class SubscriberProcess:
    """A Collector in a child process, so it shares no interpreter with the publisher."""

    def __init__(self, host: str, port: int, topic_filter: str, qos: int = 1, fmt: str = "json", *,
                 client_id: str = "", clean_session: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_collector_main, daemon=True,
                                args=(child, host, port, topic_filter, qos, fmt, client_id, clean_session))
        self.proc.start()
        if not self.conn.poll(30) or self.conn.recv() != "ready":
            raise RuntimeError("the subscriber process did not start")

    def expect(self, n: int, timeout: float, total: int | None = None) -> dict[str, Any]:
        """Wait until `n` distinct events arrived (or `timeout`); `missing` counts over seqs 1..total (or n)."""
        self.conn.send(("expect", n, timeout, total))
        if not self.conn.poll(timeout + 30):
            raise RuntimeError("the subscriber process did not answer")
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop",))
            self.conn.poll(5) and self.conn.recv()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------- runs
async def run_engine(cmds: list[Command], sinks: Iterable[Any] = (), *, burst: int = 256) -> Runtime:
    """Feed `cmds` through a Runtime with `sinks`; returns the stopped runtime."""
    rt = Runtime(Engine(), sinks=list(sinks), burst=burst)
    await rt.start()
    try:
        await rt.submit_many(cmds)
        await rt.drain()
    finally:
        await rt.stop()
    return rt


def _prefix(tag: str) -> str:
    return f"bench{os.getpid()}/{tag}"


def sink_run(url: str, cmds: list[Command], *, mode: str, qos: int, tag: str, fmt: str = "json",
             timeout: float = 300.0, **sink_kw: Any) -> dict[str, Any]:
    """One end-to-end run: runtime + MQTT sink -> broker -> subscriber process."""
    host, port = parse_mqtt_url(url)
    prefix = _prefix(tag)
    sub = SubscriberProcess(host, port, f"{prefix}/#", qos=qos, fmt=fmt)
    try:
        sink = MqttSink(url, prefix=prefix, qos=qos, mode=mode, payload_format=fmt, **sink_kw)
        t0 = time.monotonic()
        rt = asyncio.run(run_engine(cmds, [sink]))
        t_closed = time.monotonic()
        res = sub.expect(rt.events, timeout)
    finally:
        sub.close()
    done = res["done_at"] or time.monotonic()
    out = {
        "mode": mode, "qos": qos, "events": rt.events, "commands": rt.commands,
        "seconds": round(done - t0, 4), "events_per_sec": round(rt.events / (done - t0), 1),
        "engine_events_per_sec": round(rt.engine_rate(), 1),
        "published_seconds": round(t_closed - t0, 4),
        "messages": sink.messages_sent, "msgs_per_sec": round(sink.messages_sent / (done - t0), 1),
        "event_copies": sink.event_copies_sent, "lost": res["missing"], "gaps": res["gaps"],
        "duplicates": res["duplicates"], "order_errors": res["order_errors"], "topics": res["topics"],
        "sink": sink.stats(),
    }
    return out


def event_payloads(cmds: list[Command], prefix: str) -> list[tuple[str, bytes, bool]]:
    """The (topic, payload, retain) messages event mode publishes for `cmds`, in order."""
    engine, router, codec = Engine(), Router(prefix), Codec("json")
    out = []
    for cmd in cmds:
        for ev in engine.apply(cmd):
            b = codec.encode(ev)
            for st in router.route(ev):
                st.seq += 1
                out.append((st.name, codec.single(b, st.seq), st.retain))
    return out


async def _raw_publish(host: str, port: int, msgs: list[tuple[str, bytes, bool]], qos: int) -> None:
    import aiomqtt

    async with aiomqtt.Client(host, port) as client:
        for topic, payload, retain in msgs:
            await client.publish(topic, payload, qos=qos, retain=retain)


def raw_run(url: str, cmds: list[Command], *, qos: int, tag: str, timeout: float = 300.0) -> dict[str, Any]:
    """A plain aiomqtt client publishing event mode's payloads one by one, to the same kind of subscriber."""
    host, port = parse_mqtt_url(url)
    prefix = _prefix(tag)
    msgs = event_payloads(cmds, prefix)
    engine = Engine()
    n_events = sum(len(engine.apply(c)) for c in cmds)
    sub = SubscriberProcess(host, port, f"{prefix}/#", qos=qos)
    try:
        t0 = time.monotonic()
        asyncio.run(_raw_publish(host, port, msgs, qos))
        res = sub.expect(n_events, timeout)
    finally:
        sub.close()
    done = res["done_at"] or time.monotonic()
    return {"qos": qos, "messages": len(msgs), "seconds": round(done - t0, 4),
            "msgs_per_sec": round(len(msgs) / (done - t0), 1), "lost": res["missing"], "gaps": res["gaps"]}


def engine_only(cmds: list[Command], repeat: int = 2) -> float:
    """Events per second of the engine task inside the Runtime with no sink (best of `repeat`)."""
    best = 0.0
    for _ in range(repeat):
        rt = asyncio.run(run_engine(cmds))
        best = max(best, rt.engine_rate())
    return best


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", metavar="URL",
                    help="mqtt://HOST:PORT of a broker to use (default: start a private one)")
    ap.add_argument("--events", type=int, default=300_000, help="engine events for the batch-mode runs")
    ap.add_argument("--event-mode-events", type=int, default=20_000, help="engine events for the event-mode runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--client", choices=("aiomqtt", "paho"), default="aiomqtt",
                    help="the MQTT client the sink uses (the raw baseline is always aiomqtt)")
    ap.add_argument("--worker", choices=("process", "inline"), default="process",
                    help="publish from a worker process (default) or from the engine's process")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    broker = None
    url = args.broker
    if url is None:
        sys.path.insert(0, os.getcwd())
        from tests.mqtt_broker import MqttBroker

        broker = MqttBroker().start()
        url = broker.url
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    try:
        big = flow_for_events(args.seed, args.events)
        small = flow_for_events(args.seed + 1, args.event_mode_events)
        say(f"broker {broker.kind if broker else url}; {len(big)} commands for the batch runs, "
            f"{len(small)} for the event-mode runs")
        base = engine_only(big)
        say(f"engine in the runtime, no sink: {base:,.0f} events/s")
        runs: dict[str, dict[str, Any]] = {}
        for mode, qos, cmds in (("batch", 1, big), ("batch", 0, big), ("event", 1, small), ("event", 0, small)):
            r = sink_run(url, cmds, mode=mode, qos=qos, tag=f"{mode}{qos}", client=args.client, worker=args.worker)
            runs[f"{mode}_qos{qos}"] = r
            say(f"{mode:5} qos {qos}: {r['events_per_sec']:>10,.0f} events/s end to end "
                f"({r['msgs_per_sec']:,.0f} msgs/s, "
                f"{r['messages']} messages), engine {r['engine_events_per_sec']:,.0f} events/s, lost {r['lost']}, "
                f"gaps {r['gaps']}, duplicates {r['duplicates']}")
        raws = {}
        for qos in (1, 0):
            raws[qos] = raw_run(url, small, qos=qos, tag=f"raw{qos}")
            say(f"raw aiomqtt qos {qos}: {raws[qos]['msgs_per_sec']:,.0f} msgs/s ({raws[qos]['messages']} messages)")
    finally:
        if broker is not None:
            broker.close()
    b1 = runs["batch_qos1"]
    result = {
        "broker": broker.kind if broker else url,
        "client": args.client,
        "worker": args.worker,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "batch_qos1_events_per_sec": b1["events_per_sec"],
        "batch_qos0_events_per_sec": runs["batch_qos0"]["events_per_sec"],
        "event_qos1_events_per_sec": runs["event_qos1"]["events_per_sec"],
        "event_qos0_events_per_sec": runs["event_qos0"]["events_per_sec"],
        "event_qos1_msgs_per_sec": runs["event_qos1"]["msgs_per_sec"],
        "event_qos0_msgs_per_sec": runs["event_qos0"]["msgs_per_sec"],
        "raw_aiomqtt_qos1_msgs_per_sec": raws[1]["msgs_per_sec"],
        "raw_aiomqtt_qos0_msgs_per_sec": raws[0]["msgs_per_sec"],
        "event_vs_raw_qos1": round(runs["event_qos1"]["msgs_per_sec"] / raws[1]["msgs_per_sec"], 3),
        "event_vs_raw_qos0": round(runs["event_qos0"]["msgs_per_sec"] / raws[0]["msgs_per_sec"], 3),
        "engine_events_per_sec": round(base, 1),
        "engine_with_sink_events_per_sec": b1["engine_events_per_sec"],
        "engine_with_sink_ratio": round(b1["engine_events_per_sec"] / base, 3),
        "events_lost": sum(r["lost"] for r in runs.values()) + sum(r["lost"] for r in raws.values()),
        "gaps": sum(r["gaps"] for r in runs.values()),
        "duplicates": sum(r["duplicates"] for r in runs.values()),
        "order_errors": sum(r["order_errors"] for r in runs.values()),
        "batch_events": b1["events"], "event_mode_events": runs["event_qos1"]["events"],
        "batch_qos1_messages": b1["messages"],
    }
    result["targets"] = {
        "batch_qos1_200k": result["batch_qos1_events_per_sec"] >= 200_000 and b1["lost"] == 0,
        "event_mode_0.8x_raw": result["event_vs_raw_qos1"] >= 0.8 and result["event_vs_raw_qos0"] >= 0.8,
        "engine_ratio_0.6": result["engine_with_sink_ratio"] >= 0.6,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
