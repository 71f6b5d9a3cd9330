"""`python -m bench.mqtt`: events per second from the engine through an MQTT broker to a subscriber.

Every figure is end to end: a seeded random order flow (bench/random_flow.py)
goes through the real Engine inside the Runtime, the MQTT sink publishes to
the broker, and an independent subscriber in a child process receives every
topic (`PREFIX/#`) at the run's QoS and checks per-topic sequence numbers
(`Collector`). A run's rate is engine events / (time the subscriber received
the last event - time the first command was submitted, the sink and its
worker process being up by then). Runs:

* batch mode at QoS 1 and QoS 0, event mode at QoS 1 and QoS 0;
* raw aiomqtt: the same payloads the event mode publishes, one by one
  (`await client.publish(...)` per message) on a single connection, to the
  same subscriber (messages per second);
* the engine inside the Runtime with no sink, and with the MQTT sink
  attached (batch, QoS 1): the engine's own rate (events applied per second
  of the engine task, sink back-pressure included) gives
  `engine_with_sink_ratio`.

The subscriber (`--subscriber`) is `raw` by default, a minimal MQTT 3.1.1
client on a plain socket (`RawSubscriber`: QoS 1 acknowledgements,
reconnects, persistent sessions) that costs the machine about a fifth of
paho-mqtt's CPU per message; `--subscriber paho` measures with paho-mqtt's
client. Either way it decodes each message with one typed msgspec call (a
batch: its events' `seq` only) and checks every event. Each run also reports
the CPU time per event of the engine's process, the worker process and the
subscriber. `--repeat N` runs everything N times and reports medians (the
machine may be shared: `load_average_before` is the load when it started).

With `--latency`, three more runs (QoS 1) offer the flow at a steady rate
well below what the pipeline carries, and time each event from the moment
`Engine.apply` returned it (engine process) to the arrival of its first copy
at the subscriber (`time.monotonic_ns` in both: one clock for every process):
batch mode with its window (`--latency-rate`, default 20,000 events/s),
batch mode with one batch per engine step (window 0, `--latency-step-rate`,
2,000), and event mode (`--latency-event-rate`, 1,000); `latency_ms` in the
JSON has min, mean, p50, p90, p99, p99.9 and max per run.

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
import socket
import statistics
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import msgspec

from bench.random_flow import flow_for_events
from exchange.commands import Command
from exchange.engine import Engine
from exchange.mqtt_sink import CLIENTS, MqttConfig, MqttSink, parse_mqtt_url
from exchange.runtime import Runtime
from exchange.topics import BATCH_PREFIX, Codec, Router


# --------------------------------------------------------------------------- the independent subscriber
class _Seq(msgspec.Struct, gc=False):
    seq: int


class _BatchProbe(msgspec.Struct, gc=False):
    """What the Collector reads of a batch: its first topic_seq and each event's seq (one typed decode)."""

    first_topic_seq: int
    events: list[_Seq]


class _SingleProbe(msgspec.Struct, gc=False):
    """What the Collector reads of a per-event message (an event, or a publisher notice such as Gap)."""

    type: str = ""
    topic_seq: int = 0
    seq: int = 0
    count: int = 0  # a Gap notice: events dropped


class Collector:
    """Checks what a subscriber receives; fed by `PahoSubscriber` or `RawSubscriber` (its own thread).

    Per topic: topic_seq must go 1, 2, 3... (a lower or equal one is a
    duplicate and is skipped; a jump is a gap), and the engine's seq must
    increase. Across topics: which engine seqs arrived at least once.
    A message is a batch if it starts like one (topics.BATCH_PREFIX), else
    one event or a notice; each kind is decoded with its own typed decoder in
    one call (a batch: its events' seqs only).
    """

    def __init__(self, topic_filter: str, *, fmt: str = "json", latency: bool = False) -> None:
        from paho.mqtt.client import topic_matches_sub

        self.topic_filter = topic_filter
        self._matches = topic_matches_sub
        mod: Any = msgspec.json if fmt == "json" else msgspec.msgpack
        self._batch_prefix = BATCH_PREFIX[fmt]
        self._decode_batch = mod.Decoder(_BatchProbe).decode
        self._decode_single = mod.Decoder(_SingleProbe).decode
        self.last_topic_seq: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.seen = bytearray(1 << 16)
        self.distinct = 0
        self.copies = 0  # event copies accepted (after duplicates were skipped)
        self.messages = 0
        self.duplicates = 0
        self.gaps: list[tuple[str, int, int]] = []
        self.notices: list[dict[str, Any]] = []  # publisher notices (exchange/system): type, topic_seq, count
        self.order_errors = 0
        self.connects = 0
        self.undecodable = 0
        self.expected: int | None = None
        self.done_at: float | None = None
        self.first_at: float | None = None
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        # with `latency`: each event's seq and the monotonic time (ns) its first copy arrived
        self.arrival_seq: array | None = array("q") if latency else None
        self.arrival_ns = array("q")

    def on_message(self, topic: str, payload: Any) -> None:
        now = time.monotonic_ns()
        if not self._matches(self.topic_filter, topic):
            return  # a broker bug (amqtt sends some retained messages to filters they do not match)
        try:
            if payload[:len(self._batch_prefix)] == self._batch_prefix:
                b = self._decode_batch(payload)
                first, evs, notice = b.first_topic_seq, b.events, None
            else:
                notice = self._decode_single(payload)
                first, evs = notice.topic_seq, [notice]
        except msgspec.DecodeError:
            with self._lock:
                self.undecodable += 1
            return
        with self._lock:
            self.messages += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
            n = len(evs)
            last = self.last_topic_seq.get(topic, 0)
            skip = 0
            if first <= last:  # (partly) a duplicate
                skip = last + 1 - first
                self.duplicates += min(skip, n)
                if skip >= n:
                    return
            elif first != last + 1:
                self.gaps.append((topic, last + 1, first - 1))
            self.last_topic_seq[topic] = first + n - 1
            if notice is not None and notice.seq == 0:  # a publisher notice, not an event
                self.notices.append({"topic": topic, "type": notice.type, "topic_seq": notice.topic_seq,
                                     "count": notice.count})
                return
            prev = self.last_seq.get(topic, 0)
            seen = self.seen
            top = evs[-1].seq
            if top >= len(seen):
                seen.extend(bytes(max(top + 1 - len(seen), len(seen))))
            fresh = 0
            errors = 0
            arrivals = self.arrival_seq
            for ev in evs[skip:] if skip else evs:
                s = ev.seq
                if s <= prev:
                    errors += 1
                    if s >= len(seen):
                        continue
                prev = s
                if not seen[s]:
                    seen[s] = 1
                    fresh += 1
                    if arrivals is not None:
                        arrivals.append(s)
                        self.arrival_ns.append(now)
            self.order_errors += errors
            self.distinct += fresh
            self.last_seq[topic] = prev
            self.copies += n - skip
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
        seen = self.seen
        if len(seen) <= n:
            seen = seen + bytes(n + 1 - len(seen))
        return n - seen[1:n + 1].count(1)

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

    def result(self) -> dict[str, Any]:
        with self._lock:
            return {
                "messages": self.messages, "distinct": self.distinct, "copies": self.copies,
                "duplicates": self.duplicates, "gaps": len(self.gaps),
                "gap_events": sum(b - a + 1 for _, a, b in self.gaps),
                "order_errors": self.order_errors, "done_at": self.done_at, "first_at": self.first_at,
                "topics": len(self.last_topic_seq), "connects": self.connects, "undecodable": self.undecodable,
                "notices": list(self.notices),
            }


class PahoSubscriber:
    """paho-mqtt (its own network thread) feeding a Collector."""

    def __init__(self, collector: Collector, host: str, port: int, *, qos: int = 1, client_id: str = "",
                 clean_session: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.c = collector
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.05, 0.5)

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            collector.connects += 1
            client.subscribe(collector.topic_filter, qos=qos)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: collector.subscribed.set()
        self.client.on_message = lambda client, userdata, msg: collector.on_message(msg.topic, msg.payload)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


class RawSubscriber:
    """A minimal MQTT 3.1.1 subscriber on a plain socket (its own thread) feeding a Collector.

    CONNECT (clean session or not, a client id), SUBSCRIBE one filter, then
    read: every PUBLISH is handed over as a memoryview of the receive buffer
    (no copy) and, at QoS 1, acknowledged (the PUBACKs of one read go out in
    one write). It reconnects (50 ms doubling to 0.5 s) when the connection
    drops, so a persistent session survives a broker restart. What paho adds
    per message (a packet object, copies of the payload) is what it saves:
    the measuring instrument should not be what limits the measurement.
    """

    def __init__(self, collector: Collector, host: str, port: int, *, qos: int = 1, client_id: str = "",
                 clean_session: bool = True) -> None:
        self.c, self.host, self.port, self.qos = collector, host, port, qos
        self.client_id = client_id or f"raw-{os.getpid()}-{id(self):x}"
        self.clean_session = clean_session
        self._stop = False
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="raw-mqtt-subscriber", daemon=True)
        self._thread.start()

    @staticmethod
    def _varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @staticmethod
    def _str(s: str) -> bytes:
        b = s.encode()
        return len(b).to_bytes(2, "big") + b

    def _packet(self, first: int, body: bytes) -> bytes:
        return bytes((first,)) + self._varint(len(body)) + body

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02 if self.clean_session else 0x00
        sock.sendall(self._packet(0x10, self._str("MQTT") + bytes((4, flags)) + (60).to_bytes(2, "big")
                                  + self._str(self.client_id)))
        sock.sendall(self._packet(0x82, (1).to_bytes(2, "big") + self._str(self.c.topic_filter) + bytes((self.qos,))))
        sock.settimeout(1.0)
        return sock

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop:
            try:
                sock = self._sock = self._connect()
            except OSError:
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            backoff = 0.05
            with contextlib.suppress(OSError):
                self._read(sock)
            with contextlib.suppress(OSError):
                sock.close()
            if not self._stop:
                time.sleep(backoff)

    def _read(self, sock: socket.socket) -> None:
        c = self.c
        buf = bytearray(1 << 22)
        view = memoryview(buf)
        have = 0
        last_ping = time.monotonic()
        while not self._stop:
            if have == len(buf):  # a packet larger than the buffer: grow it
                view.release()
                buf.extend(bytes(len(buf)))
                view = memoryview(buf)
            try:
                n = sock.recv_into(view[have:])
            except TimeoutError:
                n = -1
            if n == 0:
                return  # the broker closed the connection
            now = time.monotonic()
            if now - last_ping > 20:
                sock.sendall(b"\xc0\x00")  # PINGREQ (keep-alive 60 s)
                last_ping = now
            if n < 0:
                continue
            have += n
            pos, acks = 0, []
            while have - pos >= 2:
                first = buf[pos]
                length, shift, i, complete = 0, 0, pos + 1, False
                while i < have and i < pos + 5:  # the remaining length: 1 to 4 bytes
                    b = buf[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        complete = True
                        break
                if not complete or i + length > have:
                    break  # an incomplete packet: read more
                kind = first >> 4
                if kind == 3:  # PUBLISH
                    tl = (buf[i] << 8) | buf[i + 1]
                    topic = bytes(view[i + 2:i + 2 + tl]).decode()
                    j = i + 2 + tl
                    if first & 0x06:
                        acks.append(b"\x40\x02" + bytes(view[j:j + 2]))
                        j += 2
                    c.on_message(topic, view[j:i + length])
                elif kind == 2:  # CONNACK
                    if buf[i + 1] != 0:
                        raise OSError(f"CONNACK refused: {buf[i + 1]}")
                    c.connects += 1
                elif kind == 9:  # SUBACK
                    c.subscribed.set()
                pos = i + length
            if acks:
                sock.sendall(b"".join(acks))
            if pos:
                buf[:have - pos] = bytes(view[pos:have])  # the start of an incomplete packet, to the front
                have -= pos

    def close(self) -> None:
        self._stop = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._thread.join(3)


SUBSCRIBERS = {"raw": RawSubscriber, "paho": PahoSubscriber}


def _collector_main(conn: Any, host: str, port: int, topic_filter: str, qos: int, fmt: str, client_id: str,
                    clean_session: bool, subscriber: str, latency: bool = False) -> None:
    c = Collector(topic_filter, fmt=fmt, latency=latency)
    sub = SUBSCRIBERS[subscriber](c, host, port, qos=qos, client_id=client_id, clean_session=clean_session)
    c.subscribed.wait(10)
    conn.send("ready")
    cpu0 = time.process_time()
    while True:
        cmd = conn.recv()
        if cmd[0] == "expect":
            c.expect(cmd[1])
            c.wait(cmd[2])
            res = c.result()
            res["missing"] = c.missing(cmd[3] or cmd[1])
            res["gap_list"] = c.gaps[:20]
            res["missing_ranges"] = c.missing_ranges(cmd[3] or cmd[1])
            res["cpu_seconds"] = time.process_time() - cpu0
            if c.arrival_seq is not None:
                with c._lock:
                    res["arrivals"] = (c.arrival_seq.tobytes(), c.arrival_ns.tobytes())
            conn.send(res)
        elif cmd[0] == "stop":
            sub.close()
            conn.send("bye")
            return


class SubscriberProcess:
    """A Collector in a child process, so it shares no interpreter with the publisher; `subscriber`: paho
    (paho-mqtt's client) or raw (RawSubscriber)."""

    def __init__(self, host: str, port: int, topic_filter: str, qos: int = 1, fmt: str = "json", *,
                 client_id: str = "", clean_session: bool = True, subscriber: str = "paho",
                 latency: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_collector_main, daemon=True,
                                args=(child, host, port, topic_filter, qos, fmt, client_id, clean_session,
                                      subscriber, latency))
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
    """Feed `cmds` through a Runtime with `sinks`; returns the stopped runtime (`submitted_at`: the
    monotonic time just before the first command was submitted, after the sinks had started)."""
    rt = Runtime(Engine(), sinks=list(sinks), burst=burst)
    await rt.start()
    try:
        rt.submitted_at = time.monotonic()  # type: ignore[attr-defined]
        await rt.submit_many(cmds)
        await rt.drain()
    finally:
        await rt.stop()
    return rt


def _prefix(tag: str) -> str:
    return f"bench{os.getpid()}/{tag}"


def sink_run(url: str, cmds: list[Command], *, mode: str, qos: int, tag: str, fmt: str = "json",
             subscriber: str = "paho", timeout: float = 300.0, **sink_kw: Any) -> dict[str, Any]:
    """One end-to-end run: runtime + MQTT sink -> broker -> subscriber process. The clock starts when the
    first command is submitted (the sink, its worker process and its connection are up by then)."""
    host, port = parse_mqtt_url(url)
    prefix = _prefix(tag)
    sub = SubscriberProcess(host, port, f"{prefix}/#", qos=qos, fmt=fmt, subscriber=subscriber)
    try:
        sink = MqttSink(url, prefix=prefix, qos=qos, mode=mode, payload_format=fmt, **sink_kw)
        cpu0 = time.process_time()
        rt = asyncio.run(run_engine(cmds, [sink]))
        t_closed = time.monotonic()
        cpu1 = time.process_time()
        res = sub.expect(rt.events, timeout)
    finally:
        sub.close()
    t0 = rt.submitted_at  # type: ignore[attr-defined]
    done = res["done_at"] or time.monotonic()
    out = {
        "mode": mode, "qos": qos, "format": fmt, "subscriber": subscriber, "events": rt.events,
        "commands": rt.commands, "seconds": round(done - t0, 4), "events_per_sec": round(rt.events / (done - t0), 1),
        "engine_events_per_sec": round(rt.engine_rate(), 1),
        "published_seconds": round(t_closed - t0, 4),
        "messages": sink.messages_sent, "msgs_per_sec": round(sink.messages_sent / (done - t0), 1),
        "event_copies": sink.event_copies_sent, "lost": res["missing"], "gaps": res["gaps"],
        "duplicates": res["duplicates"], "order_errors": res["order_errors"], "topics": res["topics"],
        # CPU µs per engine event: this process (engine, sink and, inline, the publisher; its start included),
        # the worker process (from its start), the subscriber's process (from its subscription)
        "cpu_us_per_event": {
            "engine_process": round((cpu1 - cpu0) / rt.events * 1e6, 2),
            "worker": round(sink.stats().get("worker_cpu_seconds", 0.0) / rt.events * 1e6, 2),
            "subscriber": round(res["cpu_seconds"] / rt.events * 1e6, 2),
        },
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


def raw_run(url: str, cmds: list[Command], *, qos: int, tag: str, subscriber: str = "paho",
            timeout: float = 300.0) -> dict[str, Any]:
    """A plain aiomqtt client publishing event mode's payloads one by one, to the same kind of subscriber."""
    host, port = parse_mqtt_url(url)
    prefix = _prefix(tag)
    msgs = event_payloads(cmds, prefix)
    engine = Engine()
    n_events = sum(len(engine.apply(c)) for c in cmds)
    sub = SubscriberProcess(host, port, f"{prefix}/#", qos=qos, subscriber=subscriber)
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


async def _paced_engine(engine: Engine, cmds: list[Command], sinks: list[Any], commands_per_sec: float) -> Runtime:
    """`run_engine`, with the commands submitted at a steady rate (a slice every millisecond) instead of at once."""
    rt = Runtime(engine, sinks=sinks)
    await rt.start()
    try:
        per_slice = max(1, round(commands_per_sec / 1000))
        t0 = time.monotonic()
        for i in range(0, len(cmds), per_slice):
            await rt.submit_many(cmds[i:i + per_slice])
            delay = t0 + (i + per_slice) / commands_per_sec - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await rt.drain()
    finally:
        await rt.stop()
    return rt


def latency_run(url: str, cmds: list[Command], *, mode: str, qos: int, events_per_sec: float, tag: str,
                subscriber: str = "raw", timeout: float = 300.0, **sink_kw: Any) -> dict[str, Any]:
    """Offer `cmds` at a steady `events_per_sec` (below what the pipeline can carry) and measure each event's
    delivery latency: from the moment `Engine.apply` returned it, in the engine's process, to the moment its
    first copy reached the subscriber's process (both `time.monotonic_ns`, one clock for every process on
    the machine). Batch mode's figure includes the batch window the events wait in."""
    host, port = parse_mqtt_url(url)
    prefix = _prefix(tag)
    n_events = sum(len(out) for out in map(Engine().apply, cmds))
    engine = Engine()
    step_seq, step_ns = array("q"), array("q")  # the last seq of each command's events, and when it was made
    apply = engine.apply

    def timed_apply(cmd: Command) -> list[Any]:
        out = apply(cmd)
        if out:
            step_ns.append(time.monotonic_ns())
            step_seq.append(out[-1].seq)
        return out

    engine.apply = timed_apply  # type: ignore[method-assign]
    sub = SubscriberProcess(host, port, f"{prefix}/#", qos=qos, subscriber=subscriber, latency=True)
    try:
        sink = MqttSink(url, prefix=prefix, qos=qos, mode=mode, **sink_kw)
        rate = events_per_sec * len(cmds) / n_events  # commands per second
        t0 = time.monotonic()
        rt = asyncio.run(_paced_engine(engine, cmds, [sink], rate))
        res = sub.expect(rt.events, timeout)
    finally:
        sub.close()
    seqs, arrived = array("q"), array("q")
    seqs.frombytes(res["arrivals"][0])
    arrived.frombytes(res["arrivals"][1])
    lat = sorted(t - step_ns[bisect_left(step_seq, sq)] for sq, t in zip(seqs, arrived, strict=True))
    n = len(lat)
    window = sink_kw.get("batch_window", MqttConfig().batch_window) if mode == "batch" else None
    row: dict[str, Any] = {"mode": mode, "qos": qos, "batch_window_ms": None if window is None else window * 1000,
                           "offered_events_per_sec": round(events_per_sec),
                           # events / (last delivery − first submission): the offered rate, less the tail
                           "delivered_events_per_sec": round(rt.events / ((res["done_at"] or time.monotonic()) - t0)),
                           "events": rt.events, "delivered": n, "lost": res["missing"], "gaps": res["gaps"]}
    if n:
        row["min_ms"] = round(lat[0] / 1e6, 3)
        row["mean_ms"] = round(sum(lat) / n / 1e6, 3)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)):
            row[f"{name}_ms"] = round(lat[min(n - 1, int(q * n))] / 1e6, 3)
        row["max_ms"] = round(lat[-1] / 1e6, 3)
    return row


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3 if max(values, default=0) < 100 else 1)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", metavar="URL",
                    help="mqtt://HOST:PORT of a broker to use (default: start a private one)")
    ap.add_argument("--events", type=int, default=300_000, help="engine events for the batch-mode runs")
    ap.add_argument("--event-mode-events", type=int, default=20_000, help="engine events for the event-mode runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--client", choices=sorted(CLIENTS), default="aiomqtt",
                    help="the MQTT client the sink uses (the raw baseline is always aiomqtt's own publish)")
    ap.add_argument("--worker", choices=("process", "inline"), default="process",
                    help="publish from a worker process (default) or from the engine's process")
    ap.add_argument("--format", choices=("json", "msgpack"), default="json", help="payload format (default json)")
    ap.add_argument("--subscriber", choices=sorted(SUBSCRIBERS), default="raw",
                    help="the measuring subscriber: a minimal raw-socket MQTT client (default) or paho-mqtt")
    ap.add_argument("--batch-window", type=float, metavar="MS", help="the sink's batch window (default: its own)")
    ap.add_argument("--batch-max", type=int, metavar="N", help="the sink's events per batch (default: its own)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run everything N times; figures are medians, `runs` has every run's")
    ap.add_argument("--latency", action="store_true",
                    help="also measure delivery latency at steady offered rates (after the throughput runs): "
                         "batch mode with its window, batch mode per engine step, event mode; all QoS 1")
    ap.add_argument("--latency-rate", type=float, default=20_000, metavar="EVENTS_PER_SEC",
                    help="offered rate of the batch-mode latency run (default 20,000 events/s)")
    ap.add_argument("--latency-step-rate", type=float, default=2_000, metavar="EVENTS_PER_SEC",
                    help="offered rate of the per-step batch latency run (default 2,000 events/s)")
    ap.add_argument("--latency-event-rate", type=float, default=1_000, metavar="EVENTS_PER_SEC",
                    help="offered rate of the event-mode latency run (default 1,000 events/s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    load_before = [round(x, 2) for x in os.getloadavg()]
    broker = None
    url = args.broker
    if url is None:
        sys.path.insert(0, os.getcwd())
        from tests.mqtt_broker import MqttBroker

        broker = MqttBroker().start()
        url = broker.url
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    sink_kw: dict[str, Any] = {"client": args.client, "worker": args.worker}
    if args.batch_window is not None:
        sink_kw["batch_window"] = args.batch_window / 1000.0
    if args.batch_max is not None:
        sink_kw["batch_max_events"] = args.batch_max
    every: list[dict[str, Any]] = []
    try:
        big = flow_for_events(args.seed, args.events)
        small = flow_for_events(args.seed + 1, args.event_mode_events)
        say(f"broker {broker.kind if broker else url}; {len(big)} commands for the batch runs, "
            f"{len(small)} for the event-mode runs; load average {load_before}")
        for rep in range(args.repeat):
            base = engine_only(big)
            say(f"[{rep + 1}/{args.repeat}] engine in the runtime, no sink: {base:,.0f} events/s")
            runs: dict[str, dict[str, Any]] = {}
            for mode, qos, cmds in (("batch", 1, big), ("batch", 0, big), ("event", 1, small), ("event", 0, small)):
                fmt = args.format if mode == "batch" else "json"
                r = sink_run(url, cmds, mode=mode, qos=qos, tag=f"{mode}{qos}r{rep}", fmt=fmt,
                             subscriber=args.subscriber, **sink_kw)
                runs[f"{mode}_qos{qos}"] = r
                say(f"{mode:5} qos {qos}: {r['events_per_sec']:>10,.0f} events/s end to end "
                    f"({r['msgs_per_sec']:,.0f} msgs/s, {r['messages']} messages), engine "
                    f"{r['engine_events_per_sec']:,.0f} events/s, lost {r['lost']}, gaps {r['gaps']}, duplicates "
                    f"{r['duplicates']}; CPU µs/event {r['cpu_us_per_event']}")
            raws = {}
            for qos in (1, 0):
                raws[qos] = raw_run(url, small, qos=qos, tag=f"raw{qos}r{rep}", subscriber=args.subscriber)
                say(f"raw aiomqtt qos {qos}: {raws[qos]['msgs_per_sec']:,.0f} msgs/s "
                    f"({raws[qos]['messages']} messages)")
            every.append(_summary(base, runs, raws))
        latency: dict[str, dict[str, Any]] = {}
        if args.latency:
            window = sink_kw.get("batch_window")
            for name, mode, kw, rate, cmds in (
                ("batch_qos1", "batch", {} if window is None else {"batch_window": window}, args.latency_rate,
                 flow_for_events(args.seed + 2, round(args.latency_rate * 3))),
                ("batch_per_step_qos1", "batch", {"batch_window": 0.0}, args.latency_step_rate,
                 flow_for_events(args.seed + 3, round(args.latency_step_rate * 3))),
                ("event_qos1", "event", {}, args.latency_event_rate,
                 flow_for_events(args.seed + 4, round(args.latency_event_rate * 3))),
            ):
                kw = {**sink_kw, **kw}
                r = latency[name] = latency_run(url, cmds, mode=mode, qos=1, events_per_sec=rate, tag=f"lat-{name}",
                                                subscriber=args.subscriber, **kw)
                say(f"latency {name}: offered {r['offered_events_per_sec']:,} events/s, {r['events']:,} events, "
                    f"p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, max {r.get('max_ms')} ms, lost {r['lost']}")
    finally:
        if broker is not None:
            broker.close()
    keys = [k for k, v in every[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    result: dict[str, Any] = {
        "broker": broker.kind if broker else url, "client": args.client, "worker": args.worker,
        "format": args.format, "subscriber": args.subscriber, "repeat": args.repeat,
        "load_average_before": load_before, "load_average_1min": round(os.getloadavg()[0], 2),
        **{k: _median([e[k] for e in every]) for k in keys},
    }
    for k in ("events_lost", "gaps", "duplicates", "order_errors"):
        result[k] = sum(e[k] for e in every)
    result["batch_qos1_cpu_us_per_event"] = every[len(every) // 2]["batch_qos1_cpu_us_per_event"]
    result["targets"] = {
        "batch_qos1_200k": result["batch_qos1_events_per_sec"] >= 200_000 and result["events_lost"] == 0,
        "event_mode_0.8x_raw": result["event_vs_raw_qos1"] >= 0.8 and result["event_vs_raw_qos0"] >= 0.8,
        "engine_ratio_0.6": result["engine_with_sink_ratio"] >= 0.6,
    }
    if latency:
        result["latency_ms"] = latency
        result["events_lost"] += sum(r["lost"] for r in latency.values())
    if args.repeat > 1:
        result["runs"] = {k: [e[k] for e in every] for k in ("batch_qos1_events_per_sec", "batch_qos0_events_per_sec",
                                                             "engine_with_sink_ratio", "event_vs_raw_qos1",
                                                             "event_vs_raw_qos0", "engine_events_per_sec")}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32} {v}")
    return 0


def _summary(base: float, runs: dict[str, dict[str, Any]], raws: dict[int, dict[str, Any]]) -> dict[str, Any]:
    b1 = runs["batch_qos1"]
    return {
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
        "batch_qos1_messages": b1["messages"], "batch_qos0_messages": runs["batch_qos0"]["messages"],
        "batch_qos1_cpu_us_per_event": b1["cpu_us_per_event"],
    }


if __name__ == "__main__":
    sys.exit(main())
