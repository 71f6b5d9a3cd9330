"""The MQTT sink: engine events to an MQTT broker, per event or in batches, at QoS 0 or 1.

Where the work happens. By default (`worker="process"`) the sink, in the
engine's process, does two things per chunk of engine steps: it encodes
the chunk's events with ONE msgspec call, and looks up each event's topic
set (a cached dictionary lookup by class and routing key), then writes the
bytes and the topic-set ids (a u32 array) to a worker process over a socket
pair (`_WorkerProxy.encode_frame` has the layout). The worker (`python -m
exchange.mqtt_sink --worker-fd N`, started and stopped by the sink) runs the
`Publisher`: it splits the encoded list into each event's bytes (one
`list[msgspec.Raw]` decode: no copy, no second routing), batches, keeps the
outbox and the MQTT connection. The engine thus pays about one encoding and
one lookup per event for MQTT (~0.6 µs), and the publishing uses the other
core when one is free. `worker="inline"` runs the Publisher in the engine's
own event loop (no process; the engine and the publisher then share one
core). The worker sends its log lines and statistics (with its own CPU
time) back to the sink, which logs them on the `exchange.mqtt` logger and
reports them in `stats()`.

Pipeline. Every event is encoded once; its bytes are what every topic gets.
In **event** mode the Publisher makes one message per event and topic at
once (`schema` and `topic_seq` spliced in front of the event's fields). In
**batch** mode it appends the event's bytes to each topic's pending batch;
a batch is published when it reaches `batch_max_events` (in full messages;
a message over `batch_max_bytes` is split), or when it has waited
`batch_window` seconds and no more input is waiting (while the publisher is
behind, batches fill up to their size limit: fewer, larger messages are how
it catches up), and on close. `batch_window=0` publishes the batches of every
engine step at the end of that step. A batch message is one msgspec call over
the envelope and the list of the events' bytes (topics.Codec.batch). Messages
go to an outbox; a publisher task sends them in order with at most
`max_inflight` unacknowledged at once.

Delivery. At QoS 1 a message stays in the outbox until the broker has
acknowledged it. When the connection drops (broker restart, network), the
publisher reconnects with exponential back-off (`reconnect_min` doubling up
to `reconnect_max`), puts the unacknowledged messages back at the head of the
outbox in their original order, resends them, and logs the loss (its reason
and what it holds) and, once back, how long it was down and how many messages
and events it held. Nothing the broker had not acknowledged is lost; a
message the broker had received just before the drop may arrive twice, with
the same topic_seq (QoS 1 is at least once): subscribers skip a topic_seq
they have already seen. What the broker had acknowledged is its own to keep
(a broker that dies before delivering or saving it loses it). At QoS 0 a
message counts as sent once written to the socket; what the broker had not
forwarded when it went down is lost (as QoS 0 says).

Bounds. The outbox holds at most `buffer_events` event copies (an event on
three topics counts three); when it is full the Publisher stops taking input,
so (through the socket's own flow control, in process mode) the sink's queue
in the engine process fills and its overflow policy applies (block: the
engine waits; drop: counted gaps, which become topic_seq holes and a notice
on `exchange/system`). On close the sink waits up to `close_timeout` seconds
for the broker to acknowledge everything, then counts the rest as lost.

Retained. Topics of the streams in topics.RETAINED_STREAMS (mark, index,
funding, insurance) are published with the retain flag: a late subscriber
gets the latest message at once (in batch mode the last event of that batch
is the current state).

The client library is behind `MqttClient` (connect, publish, lost, close):
`AiomqttClient` (aiomqtt 2.x, the default; it publishes through aiomqtt's
paho client and aiomqtt's acknowledgement bookkeeping without a coroutine and
a task per message, about half of the cost per message; `client="aiomqtt-task"`
awaits aiomqtt's `publish` per message) and `PahoClient` (paho-mqtt driven by
the same event loop, `client="paho"`) are provided, so another library can be
measured by the same sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from itertools import islice
from typing import Any, Protocol

import msgspec

from exchange.events import Event
from exchange.sinks import Chunk, Gap, OverflowPolicy, Sink
from exchange.topics import (
    DEFAULT_PREFIX,
    SYSTEM_TOPIC,
    Codec,
    Router,
    TopicState,
)

log = logging.getLogger("exchange.mqtt")

MODES = ("event", "batch")


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """(host, port) of `mqtt://HOST:PORT` (also `HOST:PORT` or `HOST`; the port defaults to 1883)."""
    if "://" not in url:
        url = "mqtt://" + url
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported MQTT URL scheme {u.scheme!r} (use mqtt://HOST:PORT)")
    if not u.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    return u.hostname, u.port or 1883


# --------------------------------------------------------------------------- clients
class MqttClient(Protocol):
    """What the sink needs from an MQTT client: one connection's worth."""

    async def connect(self) -> None:
        """Connect (raise on failure)."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Awaitable[None]:
        """Send one message; the awaitable completes when the broker acknowledged it (QoS 1) or it was
        written (QoS 0), and fails or never completes if the connection is lost first."""

    def lost(self) -> asyncio.Future[None]:
        """A future that completes when the connection drops."""

    async def close(self) -> None:
        """Disconnect (never raises)."""


ClientFactory = Callable[..., MqttClient]


class _Ack:
    """What aiomqtt's on_publish calls `set()` on: completes a publish's future."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut

    def set(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)


class _ClientLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiomqtt's and paho's logger (`mqtt`, as by default) but for a socket error ("failed to receive on
    socket: [Errno 104] Connection reset by peer"): that one is the reason the connection was lost, which the
    sink says in its own line, so it is kept as `last_error` and logged at DEBUG only."""

    last_error: str | None = None

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR and isinstance(msg, str) and msg.startswith("failed to "):
            with contextlib.suppress(Exception):
                self.last_error = (msg % args if args else msg).split(": ", 1)[-1]
            level = logging.DEBUG
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)


class AiomqttClient:
    """aiomqtt 2.x: its connection (connect, reading, keep-alive, disconnect). Publishing takes aiomqtt's own
    path minus its per-message coroutine and task (`fast`, the default; `fast=False`: a task awaiting
    aiomqtt's `publish` per message), so several messages are in flight."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None, max_inflight: int = 64,
                 keepalive: int = 30, timeout: float = 10.0, fast: bool = True) -> None:
        import aiomqtt

        self._log = _ClientLog(logging.getLogger("mqtt"), {})
        self._client = aiomqtt.Client(
            host, port, identifier=client_id, max_inflight_messages=max_inflight, keepalive=keepalive,
            timeout=timeout, clean_session=True, logger=self._log,  # type: ignore[arg-type]
        )
        self._client.pending_calls_threshold = 1 << 30  # it would log a warning per publish beyond 10 in flight
        # aiomqtt 2.x internals used by the fast path (else: its public `publish`, a task per message)
        self._paho = getattr(self._client, "_client", None)
        self._acks = getattr(self._client, "_pending_publishes", None)
        self._fast = fast and self._paho is not None and isinstance(self._acks, dict)
        self._entered = False  # aiomqtt's __aenter__ completed: there is a session to disconnect

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._client.__aenter__()
        self._entered = True
        if self._paho is not None:
            self._thread = threading.get_ident()
            self._aiomqtt_register_write = self._paho.on_socket_register_write
            self._paho.on_socket_register_write = self._register_write

    @property
    def last_error(self) -> str | None:
        """The socket error that ended the connection, if paho saw one."""
        return self._log.last_error

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        """paho has bytes to write: watch its socket. aiomqtt defers this with call_soon_threadsafe (paho may
        call it from the thread that connects), so when the connection drops meanwhile the deferred call
        finds the socket closed and asyncio prints a traceback (EBADF); once connected, paho calls this from
        the loop's own thread, and the writer is added at once."""
        if threading.get_ident() != self._thread:
            self._aiomqtt_register_write(client, userdata, sock)
            return

        def writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # (as aiomqtt's callback: a broken connection)
                lost = self._client._disconnected
                if not lost.done():
                    lost.set_exception(exc)

        fd = sock.fileno()
        if fd >= 0:
            self._loop.add_writer(fd, writable)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Awaitable[None]:
        if self._fast:
            return self._publish_fast(topic, payload, qos, retain)
        return asyncio.ensure_future(self._client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf))

    def _publish_fast(self, topic: str, payload: bytes, qos: int, retain: bool) -> Awaitable[None]:
        """aiomqtt's `publish` without its coroutine, task and event per message: the same call to its paho
        client, and the same registration of the message id, which aiomqtt's on_publish completes."""
        fut = self._loop.create_future()
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != 0:
            fut.set_exception(ConnectionError(f"publish failed: rc {info.rc}"))
        elif info.is_published():
            fut.set_result(None)
        else:
            self._acks[info.mid] = _Ack(fut)
        return fut

    def lost(self) -> asyncio.Future[None]:
        # aiomqtt 2.x completes this future from paho's on_disconnect (and on socket errors)
        return self._client._disconnected

    async def close(self) -> None:
        if not self._entered:
            # never connected (refused, or no CONNACK in time): aiomqtt's __aexit__ would send a DISCONNECT on
            # no connection and log "Could not gracefully disconnect: 4" (at every failed reconnection
            # attempt); close the socket, if one was opened, and that is all
            with contextlib.suppress(Exception):
                sock_close = getattr(self._paho, "_sock_close", None)
                if sock_close is not None:
                    sock_close()
            return
        self._entered = False
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._client.__aexit__(None, None, None), 5.0)


class PahoClient:
    """paho-mqtt driven from the asyncio loop directly (for comparison with aiomqtt)."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None, max_inflight: int = 64,
                 keepalive: int = 30, timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self._host, self._port, self._keepalive, self._timeout = host, port, keepalive, timeout
        self._loop = asyncio.get_running_loop()
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=True)
        self._c.max_inflight_messages_set(max_inflight)
        self._c.max_queued_messages_set(0)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        self._c.on_connect = self._on_connect
        self._c.on_disconnect = self._on_disconnect
        self._c.on_publish = self._on_publish
        self._c.on_socket_open = lambda c, u, s: self._loop.add_reader(s, self._read)
        self._c.on_socket_close = lambda c, u, s: self._loop.remove_reader(s)
        self._c.on_socket_register_write = lambda c, u, s: self._loop.add_writer(s, self._write)
        self._c.on_socket_unregister_write = lambda c, u, s: self._loop.remove_writer(s)

    def _read(self) -> None:
        if self._c.loop_read() != self._mqtt.MQTT_ERR_SUCCESS:
            self._set_lost()

    def _write(self) -> None:
        if self._c.loop_write() != self._mqtt.MQTT_ERR_SUCCESS:
            self._set_lost()

    def _set_lost(self) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not self._connected.done():
            if rc == 0:
                self._connected.set_result(None)
            else:
                self._connected.set_exception(ConnectionError(f"CONNACK {rc}"))

    def _on_disconnect(self, *args: Any) -> None:
        self._set_lost()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any = None) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def connect(self) -> None:
        await self._loop.run_in_executor(None, self._c.connect, self._host, self._port, self._keepalive)
        self._misc = self._loop.create_task(self._misc_loop())
        await asyncio.wait_for(asyncio.shield(self._connected), self._timeout)

    async def _misc_loop(self) -> None:
        while self._c.loop_misc() == self._mqtt.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1)
        self._set_lost()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Awaitable[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._c.publish(topic, payload, qos, retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            fut.set_exception(ConnectionError(f"publish failed: rc {info.rc}"))
            self._set_lost()
        elif info.is_published():
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        return fut

    def lost(self) -> asyncio.Future[None]:
        return self._lost

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._c.disconnect()
        if self._misc is not None:
            self._misc.cancel()
        with contextlib.suppress(Exception):
            sock = self._c.socket()
            if sock is not None:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        self._set_lost()


CLIENTS: dict[str, ClientFactory] = {"aiomqtt": AiomqttClient, "aiomqtt-task": partial(AiomqttClient, fast=False),
                                     "paho": PahoClient}


# --------------------------------------------------------------------------- configuration
class MqttConfig(msgspec.Struct, kw_only=True):
    """Everything the publishing side needs (sent as JSON to the worker process)."""

    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = DEFAULT_PREFIX
    qos: int = 1
    mode: str = "batch"
    payload_format: str = "json"
    batch_max_events: int = 1000
    batch_max_bytes: int = 512 * 1024
    batch_window: float = 0.02
    max_inflight: int = 0  # 0: 16 in batch mode, 64 in event mode
    buffer_events: int = 1_000_000
    reconnect_min: float = 0.05
    reconnect_max: float = 5.0
    connect_timeout: float = 10.0
    close_timeout: float = 60.0
    client: str = "aiomqtt"
    client_id: str | None = None

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError("MQTT QoS must be 0 or 1")
        if self.mode not in MODES:
            raise ValueError(f"MQTT mode must be one of {MODES}, not {self.mode!r}")
        if self.payload_format not in ("json", "msgpack"):
            raise ValueError(f"payload format must be json or msgpack, not {self.payload_format!r}")
        parse_mqtt_url(self.url)
        if not self.max_inflight:
            self.max_inflight = 16 if self.mode == "batch" else 64


class _Msg:
    __slots__ = ("events", "fut", "payload", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, retain: bool, events: int) -> None:
        self.topic = topic
        self.payload = payload
        self.retain = retain
        self.events = events  # event copies in this message
        self.fut: Any = None


class _Lost(Exception):
    pass


# --------------------------------------------------------------------------- the publishing core
class Publisher:
    """Routing, batching, the outbox and the connection: the part that runs inline or in the worker."""

    def __init__(self, cfg: MqttConfig, client_factory: ClientFactory | None = None) -> None:
        self.cfg = cfg
        self.host, self.port = parse_mqtt_url(cfg.url)
        self._client_factory: ClientFactory = client_factory or CLIENTS[cfg.client]
        self.router = Router(cfg.prefix)
        self.codec = Codec(cfg.payload_format)
        self._system = self.router.topic(SYSTEM_TOPIC)
        self._outbox: deque[_Msg] = deque()
        self._inflight: dict[int, _Msg] = {}
        self._held_events = 0
        self._held_msgs = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._dirty: list[TopicState] = []  # batch_window 0: topics touched by the current step
        self._pending = False  # some topic may have a pending batch
        self._window_start = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._gen = 0
        self._conn_error: BaseException | None = None
        self._next_id = 0
        mod: Any = msgspec.json if cfg.payload_format == "json" else msgspec.msgpack
        self._dict_decode = mod.decode
        # inline: event class -> (routing key getter, key -> topics); worker: topic-set id -> topics
        self._routes: dict[type, tuple[Callable[[Any], Any], dict[Any, tuple[TopicState, ...]]]] = {}
        self._sets: list[tuple[TopicState, ...]] = []
        self.backlog: Callable[[], int] = lambda: 0  # input waiting to be ingested (set by the owner)
        self.engine_events = 0
        self.messages_sent = 0
        self.event_copies_sent = 0
        self.bytes_sent = 0
        self.reconnects = 0
        self.down_seconds = 0.0
        self.lost_events = 0
        self.gap_notices = 0
        self.connected = False

    # ------------------------------------------------------------------ lifecycle
    def _new_client(self) -> MqttClient:
        return self._client_factory(self.host, self.port, client_id=self.cfg.client_id,
                                    max_inflight=self.cfg.max_inflight)

    async def start(self) -> None:
        client = self._new_client()
        try:
            await asyncio.wait_for(client.connect(), self.cfg.connect_timeout)
        except Exception as exc:
            await client.close()
            why = str(exc) or (f"no answer within {self.cfg.connect_timeout:g} s" if isinstance(exc, TimeoutError)
                               else type(exc).__name__)
            raise ConnectionError(f"cannot connect to MQTT broker {self.cfg.url}: {why}") from exc
        self.connected = True
        log.info("mqtt: connected to %s (qos %d, %s mode, prefix %r, %s)", self.cfg.url, self.cfg.qos,
                 self.cfg.mode, self.cfg.prefix, self.codec.format)
        self._task = asyncio.get_running_loop().create_task(self._publisher(client), name="mqtt-publisher")

    async def close(self) -> None:
        """Publish what is pending, wait (up to close_timeout) for the broker to acknowledge it all."""
        self.flush_all()
        self._closing = True
        self._wake.set()
        self._room.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.cfg.close_timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.lost_events += self._held_events
            log.error("mqtt: gave up after %.1f s: %d messages with %d events not acknowledged by %s",
                      self.cfg.close_timeout, self._held_msgs, self._held_events, self.cfg.url)
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        except Exception:
            log.exception("mqtt: publisher failed")

    # ------------------------------------------------------------------ intake
    def ingest(self, chunk: Chunk) -> None:
        """Inline intake: the engine's steps. Their events are encoded with one msgspec call and cut into
        one part per event (`Codec.parts`), which every mode publishes as they are."""
        evs = [ev for _cmd, events in chunk for ev in events]
        if not evs:
            return
        counts = [len(events) for _cmd, events in chunk] if self._per_step else None
        routed = self._route_events(evs)
        self._add(routed, self.codec.parts(self.codec.encode(evs), len(evs)), counts, dict.fromkeys(routed))
        if self._pending:
            self.close_window()

    def ingest_frame(self, body: Any) -> None:
        """Worker intake, one `B` frame (see `encode_frame`): the events' topic sets come routed by the
        engine's process, so the worker only splits the encoded list."""
        nsteps, nevents, ndefs = struct.unpack_from(">III", body)
        off = 12
        counts: Any = None
        if nsteps:
            counts = array("I")
            counts.frombytes(body[off:off + 4 * nsteps])
            off += 4 * nsteps
        ids = array("I")
        ids.frombytes(body[off:off + 4 * nevents])
        off += 4 * nevents
        if ndefs:
            sets, topic = self._sets, self.router.topic_named
            for k, names in msgspec.json.decode(body[off:off + ndefs]):
                while len(sets) <= k:
                    sets.append(())
                sets[k] = tuple(topic(name) for name in names)
            off += ndefs
        sets = self._sets
        self._add(map(sets.__getitem__, ids), self.codec.parts(body[off:], nevents), counts,
                  [sets[i] for i in set(ids)])

    @property
    def _per_step(self) -> bool:
        return self.cfg.mode == "batch" and self.cfg.batch_window <= 0

    def _route_events(self, evs: list[Event]) -> list[tuple[TopicState, ...]]:
        """Each event's topics: a cached lookup by the event's class and routing key."""
        routes, router = self._routes, self.router
        out: list[tuple[TopicState, ...]] = []
        add = out.append
        for ev in evs:
            r = routes.get(type(ev))
            states = r[1].get(r[0](ev)) if r is not None else None
            if states is None:
                states = router.route(ev)
                getter = router.compiled[type(ev)][0]
                r = routes.get(type(ev))
                if r is None:
                    r = routes[type(ev)] = (getter, {})
                r[1][getter(ev)] = states
            add(states)
        return out

    def _add(self, routed: Iterable[tuple[TopicState, ...]], raws: list[Any], counts: Any,
             touched: Iterable[tuple[TopicState, ...]] = ()) -> None:
        """Batch (or, in event mode, publish) each encoded event (its part, `Codec.parts`) on its topics
        (`touched`: the distinct topic sets of `routed`, whose batches may have reached their size limit)."""
        n = len(raws)
        if self.cfg.mode == "event":
            single, out = self.codec.single_of_part, self._push
            for states, raw in zip(routed, raws, strict=True):
                for st in states:
                    st.seq += 1
                    out(_Msg(st.name, single(raw, st.seq), st.retain, 1))
        elif counts is not None:  # batch_window 0: the batches of every engine step at the end of that step
            self._open_window()
            dirty: list[TopicState] = []
            emit = self._emit
            it_s, it_r = iter(routed), iter(raws)
            for c in counts:
                for states, raw in zip(islice(it_s, c), islice(it_r, c), strict=True):
                    for st in states:
                        p = st.pending
                        if not p:
                            dirty.append(st)
                        p.append(raw)
                for st in dirty:
                    emit(st)
                dirty.clear()
            self._pending = False
        else:
            self._open_window()
            for states, raw in zip(routed, raws, strict=True):
                for st in states:
                    st.add(raw)
            max_ev = self.cfg.batch_max_events
            for states in touched:  # batches that reached their size limit go now
                for st in states:
                    if len(st.pending) >= max_ev:
                        self._emit(st, full_only=True)
        self.engine_events += n

    # ------------------------------------------------------------------ batching
    @property
    def has_pending(self) -> bool:
        return self._pending

    def _open_window(self) -> None:
        if not self._pending:
            self._window_start = time.monotonic()
            self._pending = True

    def close_window(self, behind: bool = False) -> None:
        """After some input (`behind`: more was waiting): publish every batch if the window is over and no
        input is waiting. While the publisher is behind, batches fill up to their size limit instead: fewer,
        larger messages are how it catches up."""
        if not behind and not self.backlog() and time.monotonic() - self._window_start >= self.cfg.batch_window:
            self.flush_all()

    def idle(self) -> None:
        """Caught up: make sure what is pending goes out when its window ends."""
        if self._pending and self._flush_handle is None:
            delay = self._window_start + self.cfg.batch_window - time.monotonic()
            if delay <= 0:
                self.flush_all()
            else:
                self._flush_handle = asyncio.get_running_loop().call_later(delay, self._on_window)

    def _on_window(self) -> None:
        self._flush_handle = None
        if self.backlog() and self._pending:  # more input waiting: it will close the window
            self._flush_handle = asyncio.get_running_loop().call_later(self.cfg.batch_window, self._on_window)
            return
        self.flush_all()

    def _emit(self, st: TopicState, full_only: bool = False) -> None:
        """Move `st`'s pending batch to the outbox, in messages of at most batch_max_events events and (but
        for a single larger event) batch_max_bytes; `full_only`: only full messages, the rest stays pending."""
        items = st.pending
        if not items:
            return
        max_ev = self.cfg.batch_max_events
        n = len(items)
        if n > max_ev or full_only:
            end = n - n % max_ev if full_only else n
            for i in range(0, end, max_ev):
                self._emit_part(st, items[i:i + max_ev])
            del items[:end]
        else:
            self._emit_part(st, items)
            items.clear()

    def _emit_part(self, st: TopicState, part: list[Any]) -> None:
        payload = self.codec.batch_of_parts(st, part, st.seq + 1)
        if len(payload) > self.cfg.batch_max_bytes and len(part) > 1:  # split in two, each checked again
            half = len(part) // 2
            self._emit_part(st, part[:half])
            self._emit_part(st, part[half:])
            return
        st.seq += len(part)
        self._push(_Msg(st.name, payload, st.retain, len(part)))

    def flush_all(self) -> None:
        """Publish every pending batch."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending:
            for st in list(self.router.topics.values()):
                if st.pending:
                    self._emit(st)
            self._pending = False

    def _push(self, msg: _Msg) -> None:
        self._outbox.append(msg)
        self._held_events += msg.events
        self._held_msgs += 1
        self._wake.set()

    @property
    def full(self) -> bool:
        return self._held_events > self.cfg.buffer_events

    async def wait_room(self) -> None:
        while self._held_events > self.cfg.buffer_events and not self._closing:
            self._room.clear()
            await self._room.wait()

    def gap(self, first_seq: int, last_seq: int, events: int, commands: int, topics: dict[str, int]) -> None:
        """Events dropped by the overflow policy: skip their topic_seqs and say so on the system topic."""
        self.flush_all()  # what came before the gap goes first
        for name, n in topics.items():
            self.router.topic(name[len(self.router.prefix) + 1:] if self.router.prefix else name).seq += n
        self._system.seq += 1
        notice = {"type": "Gap", "first_seq": first_seq, "last_seq": last_seq, "count": events,
                  "commands": commands, "topics": topics}
        self._push(_Msg(self._system.name, self.codec.notice(notice, self._system.seq), False, 1))
        self.gap_notices += 1
        log.warning("mqtt: overflow policy dropped events seq %d..%d (%d events on %d topics); told subscribers "
                    "on %s", first_seq, last_seq, events, len(topics), self._system.name)

    # ------------------------------------------------------------------ connection
    async def _publisher(self, client: MqttClient | None) -> None:
        backoff = self.cfg.reconnect_min
        down_since = time.monotonic()
        while True:
            if client is None:
                client = self._new_client()
                try:
                    await asyncio.wait_for(client.connect(), self.cfg.connect_timeout)
                except Exception as exc:
                    await client.close()
                    client = None
                    log.debug("mqtt: reconnect to %s failed (%s); retrying in %.2f s", self.cfg.url, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max)
                    continue
                down = time.monotonic() - down_since
                self.down_seconds += down
                self.reconnects += 1
                self.connected = True
                log.warning("mqtt: reconnected to %s after %.2f s down; held %d messages with %d events, resending",
                            self.cfg.url, down, self._held_msgs, self._held_events)
                backoff = self.cfg.reconnect_min
            try:
                await self._pump(client)
                await client.close()
                return
            except _Lost as exc:
                down_since = time.monotonic()
                self.connected = False
                self._requeue_inflight()
                log.warning("mqtt: connection to %s lost (%s); holding %d messages with %d events, reconnecting",
                            self.cfg.url, exc, self._held_msgs, self._held_events)
                await client.close()
                client = None
            except asyncio.CancelledError:
                await client.close()
                raise

    async def _pump(self, client: MqttClient) -> None:
        self._gen += 1
        gen = self._gen
        self._conn_error = None
        lost = client.lost()
        wake = self._wake
        lost.add_done_callback(lambda _f: wake.set())
        outbox, inflight, qos, max_inflight = self._outbox, self._inflight, self.cfg.qos, self.cfg.max_inflight
        publish = client.publish
        while True:
            if lost.done() or self._conn_error is not None:
                err = self._conn_error or (lost.exception() if not lost.cancelled() else None)
                raise _Lost(getattr(client, "last_error", None) or str(err or "disconnected"))
            while outbox and len(inflight) < max_inflight:
                msg = outbox.popleft()
                self._next_id += 1
                inflight[self._next_id] = msg
                try:
                    fut = asyncio.ensure_future(publish(msg.topic, msg.payload, qos, msg.retain))
                except Exception as exc:
                    self._conn_error = exc
                    break
                msg.fut = fut
                fut.add_done_callback(partial(self._on_sent, gen, self._next_id))
            if self._closing and not outbox and not inflight:
                return
            wake.clear()
            if lost.done() or self._conn_error is not None:
                continue
            await wake.wait()

    def _on_sent(self, gen: int, mid: int, fut: asyncio.Future[None]) -> None:
        if gen != self._gen:
            return  # a future of a connection already given up; its message was requeued
        if fut.cancelled() or fut.exception() is not None:
            if self._conn_error is None:
                self._conn_error = (fut.exception() if not fut.cancelled() else None) or ConnectionError("cancelled")
            self._wake.set()
            return
        msg = self._inflight.pop(mid, None)
        if msg is None:
            return
        msg.fut = None
        self.messages_sent += 1
        self.event_copies_sent += msg.events
        self.bytes_sent += len(msg.payload)
        self._held_events -= msg.events
        self._held_msgs -= 1
        if self._held_events <= self.cfg.buffer_events and not self._room.is_set():
            self._room.set()
        self._wake.set()

    def _requeue_inflight(self) -> None:
        """Unacknowledged messages go back to the head of the outbox, in their original order."""
        self._gen += 1
        pending = list(self._inflight.values())
        self._inflight.clear()
        for msg in pending:
            if msg.fut is not None and not msg.fut.done():
                msg.fut.cancel()
            msg.fut = None
        self._outbox.extendleft(reversed(pending))

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url, "mode": self.cfg.mode, "qos": self.cfg.qos, "format": self.codec.format,
            "client": self.cfg.client, "engine_events": self.engine_events, "messages_sent": self.messages_sent,
            "event_copies_sent": self.event_copies_sent, "bytes_sent": self.bytes_sent,
            "topics": len(self.router.topics), "held_messages": self._held_msgs, "held_events": self._held_events,
            "reconnects": self.reconnects, "down_seconds": round(self.down_seconds, 3),
            "lost_events": self.lost_events, "gap_notices": self.gap_notices, "connected": self.connected,
        }


# --------------------------------------------------------------------------- the sink
class MqttSink(Sink):
    """Engine events to MQTT. `worker="process"` (the default) runs the Publisher in a child process;
    `worker="inline"` runs it in the engine's event loop (no process, but it competes with the engine)."""

    name = "mqtt"

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        worker: str = "process",
        capacity: int = 65_536,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        block_timeout: float | None = None,
        client: str | ClientFactory = "aiomqtt",
        name: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(capacity=capacity, policy=policy, block_timeout=block_timeout)
        if worker not in ("process", "inline"):
            raise ValueError("worker must be 'process' or 'inline'")
        if not isinstance(client, str):
            if worker == "process":
                raise ValueError("a custom client factory needs worker='inline'")
            self._factory: ClientFactory | None = client
            client = getattr(client, "__name__", "custom")
        else:
            self._factory = None
        self.cfg = MqttConfig(url=url, client=client, **settings)
        self.worker = worker
        if name:
            self.name = name
        self.url, self.qos, self.mode, self.prefix = url, self.cfg.qos, self.cfg.mode, self.cfg.prefix
        self.publisher: Publisher | None = None
        self._proc: _WorkerProxy | None = None
        self._tally: Router | None = None
        self._final: dict[str, Any] = {}

    async def start(self, context: dict[str, Any]) -> None:
        if self.worker == "inline":
            self.publisher = Publisher(self.cfg, self._factory)
            self.publisher.backlog = lambda: self.queued()
            await self.publisher.start()
        else:
            self._proc = _WorkerProxy(self.cfg)
            await self._proc.start()

    async def handle(self, chunk: Chunk) -> None:
        if self.publisher is not None:
            self.publisher.ingest(chunk)
            if self.publisher.full:
                await self.publisher.wait_room()
        else:
            assert self._proc is not None
            await self._proc.send_steps(chunk)

    async def idle(self) -> None:
        if self.publisher is not None:
            self.publisher.idle()

    def tally_dropped(self, chunk: Chunk, gap: Gap) -> None:
        router = self.publisher.router if self.publisher is not None else self._tally
        if router is None:
            router = self._tally = Router(self.cfg.prefix)
        detail = gap.detail
        for _cmd, events in chunk:
            for ev in events:
                for st in router.route(ev):
                    detail[st.name] = detail.get(st.name, 0) + 1

    async def gap(self, gap: Gap) -> None:
        if self.publisher is not None:
            self.publisher.gap(gap.first_seq, gap.last_seq, gap.events, gap.commands, dict(gap.detail))
        elif self._proc is not None:
            await self._proc.send_gap(gap)

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
            self._final = self.publisher.stats()
        elif self._proc is not None:
            self._final = await self._proc.close(self.cfg.close_timeout)

    def stats(self) -> dict[str, Any]:
        if self.publisher is not None:
            return self.publisher.stats()
        if self._proc is not None and not self._final:
            return dict(self._proc.last_stats, worker="process")
        return dict(self._final, worker=self.worker)

    def _stat(self, key: str) -> int:
        return int(self.stats().get(key, 0) or 0)

    @property
    def messages_sent(self) -> int:
        return self._stat("messages_sent")

    @property
    def event_copies_sent(self) -> int:
        return self._stat("event_copies_sent")

    @property
    def reconnects(self) -> int:
        return self._stat("reconnects")

    @property
    def lost_events(self) -> int:
        return self._stat("lost_events")

    @property
    def held_events(self) -> int:
        return self._stat("held_events")


# --------------------------------------------------------------------------- the worker process
# Frames on the socket pair: 4-byte big-endian length, then 1 byte of kind, then the body.
#   parent -> worker:  C config (JSON) | E steps (payload format) | G gap (JSON) | X close (JSON: timeout)
#   worker -> parent:  R ready | F failed (text) | L log (JSON [level, message]) | S stats (JSON) | D done (JSON)


_PIPE_BYTES = 1 << 22  # socket buffers and write high-water mark between the engine's process and the worker


def _frame(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body) + 1) + kind + body


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(4)
    (n,) = struct.unpack(">I", head)
    data = await reader.readexactly(n)
    return data[:1], data[1:]


class _WorkerProxy:
    """The engine side of the worker process: spawns it, streams steps to it, relays its logs and stats."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_stats: dict[str, Any] = {}
        self._done: asyncio.Future[dict[str, Any]] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        enc = msgspec.json.Encoder() if cfg.payload_format == "json" else msgspec.msgpack.Encoder()
        self._encode = enc.encode
        self._per_step = cfg.mode == "batch" and cfg.batch_window <= 0  # the worker needs the step boundaries
        # the engine's process routes (cached) and sends each event's topic-set id: the worker only splits
        self._router = Router(cfg.prefix)
        self._ids: dict[type, tuple[Callable[[Any], Any], dict[Any, int]]] = {}
        self._set_ids: dict[tuple[TopicState, ...], int] = {}
        self.failed: str | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        for sock, opt in ((parent, socket.SO_SNDBUF), (child, socket.SO_RCVBUF)):
            with contextlib.suppress(OSError):  # (the system's maximum applies)
                sock.setsockopt(socket.SOL_SOCKET, opt, _PIPE_BYTES)
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exchange.mqtt_sink", "--worker-fd", str(child.fileno())],
            pass_fds=[child.fileno()], env=env,
        )
        child.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        # let frames queue in the transport rather than wait for the worker after each one (asyncio's default
        # high-water mark, 64 KiB, is less than a frame): the engine's loop goes back to the engine sooner
        self.writer.transport.set_write_buffer_limits(high=_PIPE_BYTES)
        self._ready = loop.create_future()
        self._done = loop.create_future()
        self._reader_task = loop.create_task(self._read_loop(), name="mqtt-worker-reader")
        self.writer.write(_frame(b"C", msgspec.json.encode(self.cfg)))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.cfg.connect_timeout + 30)
        except BaseException:
            await self._kill()
            raise

    async def _read_loop(self) -> None:
        assert self.reader is not None and self._ready is not None and self._done is not None
        try:
            while True:
                kind, body = await _read_frame(self.reader)
                if kind == b"L":
                    level, message = msgspec.json.decode(body)
                    log.log(level, "%s", message)
                elif kind == b"S":
                    self.last_stats = msgspec.json.decode(body)
                elif kind == b"R":
                    self._ready.set_result(None)
                elif kind == b"F":
                    self.failed = body.decode()
                    if not self._ready.done():
                        self._ready.set_exception(ConnectionError(self.failed))
                elif kind == b"D":
                    self.last_stats = msgspec.json.decode(body)
                    self._done.set_result(self.last_stats)
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.failed = self.failed or f"worker process ended ({exc.__class__.__name__})"
            for fut in (self._ready, self._done):
                if not fut.done():
                    fut.set_exception(ConnectionError(self.failed))

    async def send_steps(self, chunk: Chunk) -> None:
        if self.failed is not None:
            raise ConnectionError(f"MQTT worker failed: {self.failed}")
        assert self.writer is not None
        parts = self.encode_frame(chunk)
        if parts:
            for part in parts:  # (separate writes: the payload goes to the socket without being copied)
                self.writer.write(part)
            await self.writer.drain()

    def encode_frame(self, chunk: Chunk) -> list[Any]:
        """A `B` frame, all the engine's process does per event: the events encoded with one msgspec call,
        and the id of each one's topic set (a cached lookup by class and routing key).

        Layout: u32 length, b"B", u32 steps (0: no step boundaries), u32 events, u32 length of the new
        topic-set definitions; per step its u32 event count, per event its u32 topic-set id (native byte
        order, as `array`), the definitions (JSON [[id, [topic, ...]], ...]), the encoded list of events."""
        evs: list[Event] = []
        for _cmd, events in chunk:
            evs += events
        if not evs:
            return []
        ids = array("I")
        add = ids.append
        comp = self._ids
        new: list[Any] | None = None
        for ev in evs:
            c = comp.get(type(ev))
            i = c[1].get(c[0](ev)) if c is not None else None
            if i is None:
                if new is None:
                    new = []
                i = self._route_id(ev, new)
            add(i)
        data = self._encode(evs)
        defs = msgspec.json.encode(new) if new else b""
        counts = array("I", [len(events) for _cmd, events in chunk]) if self._per_step else array("I")
        size = 13 + 4 * (len(counts) + len(ids)) + len(defs) + len(data)
        head = struct.pack(">IcIII", size, b"B", len(counts), len(ids), len(defs))
        return [b"".join((head, counts.tobytes(), ids.tobytes(), defs)), data]

    def _route_id(self, ev: Event, new: list[Any]) -> int:
        """The id of `ev`'s topic set (defined in `new` the first time), cached by its routing key."""
        states = self._router.route(ev)
        i = self._set_ids.get(states)
        if i is None:
            i = self._set_ids[states] = len(self._set_ids)
            new.append([i, [st.name for st in states]])
        getter = self._router.compiled[type(ev)][0]
        c = self._ids.get(type(ev))
        if c is None:
            c = self._ids[type(ev)] = (getter, {})
        c[1][getter(ev)] = i
        return i

    async def send_gap(self, gap: Gap) -> None:
        assert self.writer is not None
        body = {"first_seq": gap.first_seq, "last_seq": gap.last_seq, "events": gap.events,
                "commands": gap.commands, "topics": gap.detail}
        self.writer.write(_frame(b"G", msgspec.json.encode(body)))
        await self.writer.drain()

    async def close(self, timeout: float) -> dict[str, Any]:
        assert self.writer is not None and self._done is not None
        try:
            self.writer.write(_frame(b"X"))
            await self.writer.drain()
            return await asyncio.wait_for(asyncio.shield(self._done), timeout + 15)
        except Exception as exc:
            log.error("mqtt: worker did not finish cleanly (%s)", exc)
            return dict(self.last_stats)
        finally:
            await self._kill()

    async def _kill(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
        if self.proc is not None:
            for _ in range(100):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


class _FrameLogHandler(logging.Handler):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(logging.INFO)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(_frame(b"L", msgspec.json.encode([record.levelno, record.getMessage()])))


async def _worker_main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 24)
    handler = _FrameLogHandler(writer)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    kind, body = await _read_frame(reader)
    if kind != b"C":
        raise SystemExit("mqtt worker: no configuration")
    cfg = msgspec.json.decode(body, type=MqttConfig)
    pub = Publisher(cfg)
    pub.backlog = lambda: len(getattr(reader, "_buffer", b""))  # input received, not yet read
    try:
        await pub.start()
    except Exception as exc:
        writer.write(_frame(b"F", str(exc).encode()))
        await writer.drain()
        return
    writer.write(_frame(b"R"))
    cpu0 = time.process_time()

    def stats() -> bytes:
        return msgspec.json.encode({**pub.stats(), "worker_cpu_seconds": round(time.process_time() - cpu0, 3)})

    async def report() -> None:
        while True:
            await asyncio.sleep(0.25)
            writer.write(_frame(b"S", stats()))

    reporter = asyncio.get_running_loop().create_task(report())
    rest = b""
    try:
        while True:
            if pub.full:
                await pub.wait_room()
            data = await reader.read(1 << 22)  # everything received so far (up to 4 MiB): one copy, many frames
            if not data:
                log.error("mqtt: the engine process went away; flushing what is held")
                break
            if rest:
                data = rest + data
            view = memoryview(data)
            pos, end, stop, frames = 0, len(data), False, 0
            while end - pos >= 4:
                (n,) = struct.unpack_from(">I", data, pos)
                if end - pos - 4 < n:
                    break
                kind, body = data[pos + 4:pos + 5], view[pos + 5:pos + 4 + n]
                pos += 4 + n
                if kind == b"B":
                    pub.ingest_frame(body)
                    frames += 1
                elif kind == b"G":
                    g = msgspec.json.decode(body)
                    pub.gap(g["first_seq"], g["last_seq"], g["events"], g["commands"], g["topics"])
                elif kind == b"X":
                    stop = True
                    break
            if stop:
                break
            rest = data[pos:]
            # behind: more than one frame was waiting, or more came in meanwhile (then batches fill up)
            behind = frames > 1 or bool(getattr(reader, "_buffer", b""))
            if pub.has_pending:
                pub.close_window(behind)
                pub.idle()  # the window's timer publishes what is pending if nothing else comes
    finally:
        reporter.cancel()
        await pub.close()
        writer.write(_frame(b"D", stats()))
        with contextlib.suppress(Exception):
            await writer.drain()
        log.removeHandler(handler)
        writer.close()


def _worker_entry(argv: list[str]) -> int:
    fd = int(argv[argv.index("--worker-fd") + 1])
    asyncio.run(_worker_main(fd))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_entry(sys.argv))
