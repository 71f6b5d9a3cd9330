"""Sinks: where the engine's output goes, each behind its own bounded queue.

The runtime's engine task hands every sink the same chunks: a chunk is a list
of steps, a step `(command, events)` is one command the engine applied and the
events it caused, in order. Each sink has a `SinkQueue` bounded in events; a
sink task drains it and calls the sink. A slow sink therefore delays only its
own queue, until that queue is full; then the sink's overflow policy decides:

* ``block`` (the default, and the only policy a journal accepts): the engine
  waits until the sink has taken items out of its queue. Nothing is lost; the
  engine stalls for as long as the sink needs to free room, which is the
  sink's capacity divided by its throughput. With ``block_timeout`` set, the
  engine waits at most that long; then the chunk is dropped as with ``drop``
  and the queue drops every further chunk until it has drained to half its
  capacity, so a stuck sink costs the engine at most ``block_timeout`` once
  per overflow episode, never once per chunk.
* ``drop``: the engine never waits; a chunk that does not fit is dropped
  (the newest data goes, what is queued stays in order). Drops are never
  silent: they are counted (``dropped_events``, ``dropped_steps``, ``gaps``),
  and a `Gap` marker with the dropped range of global sequence numbers takes
  their place in the queue, so the sink learns of the gap in order, logs it
  and (the MQTT sink) tells subscribers through topic_seq holes and a notice
  on the system topic.

A queue admits a chunk into an empty queue whatever its size, so a chunk
larger than the capacity cannot deadlock; the bound on what a sink holds is
therefore capacity + one chunk (the runtime's burst) + what the sink itself
buffers (the MQTT sink's outbox has its own bound).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from enum import StrEnum
from typing import Any

from exchange.commands import Command
from exchange.events import Event

log = logging.getLogger("exchange.sinks")

Step = tuple[Command, list[Event]]
Chunk = list[Step]


class OverflowPolicy(StrEnum):
    BLOCK = "block"
    DROP = "drop"


class Gap:
    """Stands in a sink's queue for chunks dropped by the overflow policy."""

    __slots__ = ("commands", "detail", "events", "first_seq", "last_seq")

    def __init__(self) -> None:
        self.first_seq = 0  # global seq of the first dropped event (0: none yet)
        self.last_seq = 0
        self.events = 0
        self.commands = 0
        self.detail: dict[Any, int] = {}  # what the sink's tally_dropped counted (e.g. events per topic)

    def add(self, chunk: Chunk) -> None:
        for _cmd, events in chunk:
            self.commands += 1
            if events:
                if not self.first_seq:
                    self.first_seq = events[0].seq
                self.last_seq = events[-1].seq
                self.events += len(events)

    def __repr__(self) -> str:
        return f"Gap(seq {self.first_seq}..{self.last_seq}, {self.events} events, {self.commands} commands)"


class Sink:
    """Base class of a sink: override `handle`, and the others as needed.

    The sink task calls, in order: `start` once (before the engine runs),
    `handle` for every chunk and `gap` for every Gap in queue order, `idle`
    whenever the queue is empty, and `close` once after the last chunk
    (it flushes and releases everything). `tally_dropped` is called
    synchronously, from the engine task, for each chunk the policy drops.
    """

    name = "sink"

    def __init__(self, *, capacity: int = 65_536, policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
                 block_timeout: float | None = None) -> None:
        self.capacity = capacity
        self.policy = OverflowPolicy(policy)
        self.block_timeout = block_timeout

    def queued(self) -> int:
        """Items waiting in this sink's queue (set by its runner): a sink may batch more when behind."""
        return 0

    async def start(self, context: dict[str, Any]) -> None:
        """Open resources; `context` holds the run's `config` (what the journal header names)."""

    async def handle(self, chunk: Chunk) -> None:
        raise NotImplementedError

    async def gap(self, gap: Gap) -> None:
        log.warning("%s: overflow dropped %r", self.name, gap)

    def tally_dropped(self, chunk: Chunk, gap: Gap) -> None:
        """Count what `chunk` would have produced into `gap.detail` (called at drop time)."""

    async def idle(self) -> None:
        """The sink has caught up with the engine (its queue is empty)."""

    async def close(self) -> None:
        """Flush and release; no chunk follows."""

    def stats(self) -> dict[str, Any]:
        return {}


class SinkQueue:
    """A bounded queue of chunks (counted in events) with the overflow policy of its sink."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.capacity = max(1, sink.capacity)
        self.policy = sink.policy
        self.block_timeout = sink.block_timeout
        self._items: deque[Chunk | Gap] = deque()
        self._sizes: deque[int] = deque()
        self.depth = 0  # events queued
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self._closed = False
        self._overflowing = False
        self.dead = False  # the sink failed: everything is dropped (and counted) from then on
        # counters
        self.events_in = 0
        self.steps_in = 0
        self.dropped_events = 0
        self.dropped_steps = 0
        self.gaps = 0
        self.max_depth = 0
        self.blocked_seconds = 0.0
        self.blocked_times = 0

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, chunk: Chunk, n_events: int) -> None:
        """Queue `chunk` (holding `n_events` events), applying the overflow policy if it does not fit."""
        size = n_events or 1
        if self.dead:
            self.dropped_steps += len(chunk)
            self.dropped_events += n_events
            return
        if self._overflowing:
            if self.depth > self.capacity // 2:
                self._drop(chunk)
                return
            self._overflowing = False
        if self.depth and self.depth + size > self.capacity:
            if self.policy is OverflowPolicy.DROP:
                self._drop(chunk)
                return
            t0 = time.perf_counter()
            self.blocked_times += 1
            try:
                if self.block_timeout is None:
                    await self._wait_room(size)
                else:
                    try:
                        await asyncio.wait_for(self._wait_room(size), self.block_timeout)
                    except TimeoutError:
                        self._overflowing = True
                        log.warning("%s: blocked %.3f s on a full queue (%d events); dropping until it drains "
                                    "to %d", self.sink.name, self.block_timeout, self.depth, self.capacity // 2)
                        self._drop(chunk)
                        return
            finally:
                self.blocked_seconds += time.perf_counter() - t0
            if self.dead:
                self.dropped_steps += len(chunk)
                self.dropped_events += n_events
                return
        self._items.append(chunk)
        self._sizes.append(size)
        self.depth += size
        self.events_in += n_events
        self.steps_in += len(chunk)
        if self.depth > self.max_depth:
            self.max_depth = self.depth
        self._ready.set()

    async def _wait_room(self, size: int) -> None:
        while self.depth and self.depth + size > self.capacity and not self.dead:
            self._room.clear()
            await self._room.wait()

    def _drop(self, chunk: Chunk) -> None:
        tail = self._items[-1] if self._items else None
        if not isinstance(tail, Gap):
            tail = Gap()
            self._items.append(tail)
            self._sizes.append(0)
            self.gaps += 1
            self._ready.set()
        tail.add(chunk)
        self.dropped_steps += len(chunk)
        self.dropped_events += sum(len(evs) for _c, evs in chunk)
        self.sink.tally_dropped(chunk, tail)

    def fail(self) -> None:
        """The sink is gone: drop (and count) what is queued and everything put from now on."""
        if not self.dead:
            self.dead = True
            self.gaps += 1
        for item in self._items:
            if not isinstance(item, Gap):
                self.dropped_steps += len(item)
                self.dropped_events += sum(len(evs) for _c, evs in item)
        self._items.clear()
        self._sizes.clear()
        self.depth = 0
        self._room.set()

    def close(self) -> None:
        """No more puts; the consumer drains what is queued, then `get` returns []."""
        self._closed = True
        self._ready.set()

    async def get(self) -> list[Chunk | Gap]:
        """Everything queued, in order (waits while empty); [] once closed and drained."""
        while not self._items:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        items = list(self._items)
        self._items.clear()
        self._sizes.clear()
        self.depth = 0
        self._overflowing = False  # drained (to zero, so below half)
        self._room.set()
        return items

    def stats(self) -> dict[str, Any]:
        return {
            "policy": str(self.policy), "capacity": self.capacity, "depth": self.depth, "max_depth": self.max_depth,
            "events_in": self.events_in, "steps_in": self.steps_in, "dropped_events": self.dropped_events,
            "dropped_steps": self.dropped_steps, "gaps": self.gaps, "blocked_times": self.blocked_times,
            "blocked_seconds": round(self.blocked_seconds, 6),
        }


class SinkRunner:
    """The task that feeds one sink from its queue."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.queue = SinkQueue(sink)
        self._remaining = 0  # items taken from the queue, not yet handled
        sink.queued = lambda: len(self.queue) + self._remaining  # type: ignore[method-assign]
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def run(self) -> None:
        sink, queue = self.sink, self.queue
        try:
            while True:
                items = await queue.get()
                if not items:
                    break
                self._remaining = len(items)
                for item in items:
                    self._remaining -= 1
                    if isinstance(item, Gap):
                        await sink.gap(item)
                    else:
                        await sink.handle(item)
                if not len(queue):
                    await sink.idle()
        except BaseException as exc:  # the engine must not wait for a dead sink: drop and count from now on
            self.error = exc
            queue.fail()
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("%s: sink failed; its events are dropped (and counted) from now on", sink.name)
            raise
        finally:
            try:
                await sink.close()
            except Exception:
                log.exception("%s: close failed", sink.name)

    def stats(self) -> dict[str, Any]:
        return {"queue": self.queue.stats(), **self.sink.stats()}


class CallbackSink(Sink):
    """A sink that calls a function with each chunk (tests, in-process consumers)."""

    name = "callback"

    def __init__(self, fn: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.fn = fn

    async def handle(self, chunk: Chunk) -> None:
        r = self.fn(chunk)
        if asyncio.iscoroutine(r):
            await r


class CollectSink(Sink):
    """Keeps every step it is given, and the gaps: for tests and small tools."""

    name = "collect"

    def __init__(self, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.steps: list[Step] = []
        self.gaps: list[Gap] = []
        self.delay = delay  # seconds to sleep per chunk: a deliberately slow sink
        self.stalled: asyncio.Event | None = None  # while set... see `stall`

    @property
    def events(self) -> list[Event]:
        return [ev for _c, evs in self.steps for ev in evs]

    def stall(self) -> None:
        """Stop consuming until `resume` (the queue fills up behind it)."""
        self.stalled = asyncio.Event()

    def resume(self) -> None:
        if self.stalled is not None:
            self.stalled.set()
            self.stalled = None

    async def handle(self, chunk: Chunk) -> None:
        if self.stalled is not None:
            await self.stalled.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.steps.extend(chunk)

    async def gap(self, gap: Gap) -> None:
        self.gaps.append(gap)
        await super().gap(gap)
