"""The asyncio shell around the deterministic engine.

One task owns the engine. Commands arrive in a bounded ingress queue and are
applied strictly in arrival order; the events of each command leave the
engine once and are handed, as chunks of `(command, events)` steps, to every
sink's own bounded queue (see exchange/sinks.py for the overflow policies).

Time. The engine reads only its VirtualClock; the runtime moves it with
`AdvanceClock` commands that go through the ingress queue like any other, so
the journal holds every one of them and a replay is exact.

* ``VirtualTime``: time moves only when a producer submits `AdvanceClock`
  (or calls `advance_to`); everything runs as fast as possible. For tests,
  scenarios and benchmarks.
* ``RealTime(speed, tick_ms)``: a clock task submits `AdvanceClock` every
  `tick_ms` of virtual time, paced so that virtual time runs `speed` times
  as fast as the (monotonic) wall clock. For bots connected live. Producers
  should not submit AdvanceClock themselves in this mode.

Timers (mark-price ticks, funding, ...) are periodic in virtual time. When an
AdvanceClock passes a timer's due time, the engine task first advances the
clock to that due time, then applies the commands the timer returns (its
function reads the engine, never the wall clock), then goes on to the target
time; each of these is journaled as its own step, so a replay needs no timers.

Shutdown. A stop request (`request_stop`, or SIGINT/SIGTERM once
`install_signal_handlers` was called) closes the intake at once: `closed` is
true and every `submit*`/`request` raises RuntimeClosed, while the engine
still applies every command already accepted and hands its events to the
sinks (nothing accepted is lost); a producer in `run_producer` stops at its
next chunk (at most `burst` commands on), and a paced wait for the wall
clock ends at once.
`stop` (which `serve` calls; a command calls it after its producer returns)
then waits for the engine to go idle, closes and drains every sink queue,
lets each sink flush and close (the journal writes its `end` line, the MQTT
sink waits for its acknowledgements within its own timeout) and returns.
A second signal cancels the sinks at once. `stop_signal` tells which signal
stopped the run (None: none did), so a command can exit with 128 + it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from exchange.clock import VirtualClock
from exchange.commands import AdvanceClock, Command, SetMarkPrice
from exchange.engine import Engine
from exchange.events import SCHEMA_VERSION, Event
from exchange.sinks import Sink, SinkRunner

log = logging.getLogger("exchange.runtime")


class RuntimeClosed(RuntimeError):
    """The runtime is stopping or stopped: it accepts no more commands."""


class IngressFull(RuntimeError):
    """`submit_nowait` found the ingress queue full."""


class VirtualTime(msgspec.Struct, frozen=True):
    """Virtual time moved only by AdvanceClock commands; as fast as possible."""

    start_ms: int = 0
    mode: str = "virtual"


class RealTime(msgspec.Struct, frozen=True):
    """Virtual time paced by the wall clock, `speed` times as fast, in steps of `tick_ms`."""

    speed: float = 1.0
    tick_ms: int = 100
    start_ms: int = 0
    mode: str = "real"

    def __post_init__(self) -> None:
        if self.speed <= 0 or self.tick_ms <= 0:
            raise ValueError("speed and tick_ms must be positive")


ClockConfig = VirtualTime | RealTime


class Timer:
    """A periodic job in virtual time: `fn(engine, now_ms)` returns the commands to apply."""

    def __init__(self, name: str, interval_ms: int, fn: Callable[[Engine, int], Iterable[Command]],
                 first_ms: int | None = None) -> None:
        if interval_ms <= 0:
            raise ValueError("a timer's interval must be positive")
        self.name = name
        self.interval_ms = interval_ms
        self.fn = fn
        self.first_ms = first_ms
        self.next_ms = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "interval_ms": self.interval_ms, "first_ms": self.first_ms}


def mark_price_timer(interval_ms: int = 1000) -> Timer:
    """Until the mark-price model exists: each tick, mark = mid of the best bid and ask (else last trade)."""

    def tick(engine: Engine, now: int) -> list[Command]:
        out: list[Command] = []
        for symbol, m in engine.markets.items():
            bid, ask = m.book.best_bid(), m.book.best_ask()
            mark = (bid + ask) // 2 if bid is not None and ask is not None else m.last_price
            if mark and mark != m.mark_price:
                out.append(SetMarkPrice(symbol=symbol, price=mark))
        return out

    return Timer("mark_price", interval_ms, tick)


def describe_engine(engine: Engine) -> dict[str, Any]:
    """What a replay needs to build the same engine: instruments, clock start, clearing settings."""
    out: dict[str, Any] = {
        "instruments": [msgspec.to_builtins(m.instrument) for m in engine.markets.values()],
        "start_ms": engine.clock.now,
        "start_seq": engine.seq,
    }
    clearing = getattr(engine, "clearing", None)
    if clearing is not None:
        c: dict[str, Any] = {}
        for attr in ("profile", "maker_fee_ppm", "taker_fee_ppm"):
            if hasattr(clearing, attr):
                c[attr] = msgspec.to_builtins(getattr(clearing, attr))
        out["clearing"] = c
    return out


class Pacer:
    """Virtual time against the wall clock: virtual ms `ts` is due `(ts - virtual0) / speed` ms after the start.

    The start is the moment the Pacer is made (monotonic clock), or `wall0`.
    """

    def __init__(self, speed: float, virtual0: int, wall0: float | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.virtual0 = virtual0
        self.wall0 = time.monotonic() if wall0 is None else wall0

    def delay(self, ts: int) -> float:
        """Seconds until virtual time `ts` is due (zero or less: it is due)."""
        return self.wall0 + (ts - self.virtual0) / 1000.0 / self.speed - time.monotonic()


class Runtime:
    """Owns an engine: ingress queue, engine task, clock, timers, sinks, shutdown."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        sinks: Iterable[Sink] = (),
        clock: ClockConfig | None = None,
        timers: Iterable[Timer] = (),
        ingress_capacity: int = 65_536,
        burst: int = 256,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine if engine is not None else Engine()
        if not isinstance(self.engine.clock, VirtualClock):
            raise ValueError("the runtime drives the engine's time: give the engine a VirtualClock")
        self.clock = clock if clock is not None else VirtualTime()
        if self.clock.start_ms > self.engine.clock.now:
            self.engine.clock.advance_to(self.clock.start_ms)
        self.timers = list(timers)
        self.runners = [SinkRunner(s) for s in sinks]
        self.ingress_capacity = ingress_capacity
        self.burst = burst
        self.user_config = dict(config or {})
        self._ingress: deque[tuple[Command, asyncio.Future[list[Event]] | None]] = deque()
        self._has_input = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop_requested = asyncio.Event()
        self._closing = False  # intake closed: a stop was requested, stop() runs, or the engine failed
        self._stopping = False  # stop() has begun
        self.stop_signal: int | None = None  # the signal that requested the stop, if one did
        self._started = False
        self._stopped: asyncio.Future[None] | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._signals: list[int] = []
        self._heap: list[tuple[int, int, Timer]] = []
        self.error: BaseException | None = None
        # counters
        self.commands = 0
        self.events = 0
        self.first_apply: float | None = None  # perf_counter of the first and latest chunk applied
        self.last_apply: float | None = None
        self.config = self._build_config()

    # ------------------------------------------------------------------ config
    def _build_config(self) -> dict[str, Any]:
        """The run's configuration as the journal header records it: nothing that differs between runs."""
        return {
            "schema": SCHEMA_VERSION,
            "engine": describe_engine(self.engine),
            "clock": msgspec.to_builtins(self.clock),
            "timers": [t.describe() for t in self.timers],
            "run": self.user_config,
        }

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the sinks (each one's `start`, e.g. the MQTT connection), then the engine and the clock."""
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        now = self.engine.clock.now
        for i, t in enumerate(self.timers):
            t.next_ms = t.first_ms if t.first_ms is not None else now + t.interval_ms
            heapq.heappush(self._heap, (t.next_ms, i, t))
        context = {"config": self.config}
        started: list[SinkRunner] = []
        try:
            for r in self.runners:
                await r.sink.start(context)
                started.append(r)
        except BaseException:
            for r in started:
                try:
                    await r.sink.close()
                except Exception:
                    log.exception("%s: close failed", r.sink.name)
            self._closing = self._stopping = True
            self.remove_signal_handlers()
            self._stopped.set_result(None)
            raise
        for r in self.runners:
            r.task = loop.create_task(r.run(), name=f"sink:{r.sink.name}")
        self._engine_task = loop.create_task(self._engine_loop(), name="engine")
        if isinstance(self.clock, RealTime):
            self._clock_task = loop.create_task(self._clock_loop(self.clock), name="clock")

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def request_stop(self) -> None:
        """Close the intake now and ask `serve` (or whoever waits in `wait_stop_requested`) to shut down.

        From here on `closed` is true and submitting raises RuntimeClosed; what was accepted before
        is still applied, and its events reach the sinks when `stop` drains them.
        """
        self._closing = True
        self._stop_requested.set()
        self._has_input.set()  # the engine task applies what is queued, then ends
        self._space.set()  # blocked submitters wake and raise RuntimeClosed

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    async def wait_stop_requested(self) -> None:
        await self._stop_requested.wait()

    async def serve(self) -> None:
        """Start, run until `request_stop` (or a signal), then stop cleanly."""
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop intake, let the engine apply what was accepted, drain and close every sink."""
        if not self._started:
            return
        assert self._stopped is not None
        if self._stopping:
            await asyncio.shield(self._stopped)
            return
        self._stopping = True
        self._closing = True
        self._stop_requested.set()
        try:
            if self._clock_task is not None:
                self._clock_task.cancel()
                await asyncio.gather(self._clock_task, return_exceptions=True)
            self._has_input.set()
            self._space.set()  # blocked submitters wake and raise RuntimeClosed
            if self._engine_task is not None:
                await asyncio.gather(self._engine_task, return_exceptions=True)
            for r in self.runners:
                r.queue.close()
            tasks = [r.task for r in self.runners if r.task is not None]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r, res in zip(self.runners, results, strict=False):
                if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                    log.error("%s: sink ended with %r", r.sink.name, res)
            for r in self.runners:
                st = r.queue.stats()
                if st["dropped_events"] or st["blocked_times"]:
                    log.warning("%s: %d events dropped in %d gaps; engine blocked %d times for %.3f s",
                                r.sink.name, st["dropped_events"], st["gaps"], st["blocked_times"],
                                st["blocked_seconds"])
        finally:
            self.remove_signal_handlers()
            if not self._stopped.done():
                self._stopped.set_result(None)
        if self.error is not None:
            raise self.error

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM: first one stops cleanly (`request_stop`), a second one cancels the sinks."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no unix signals
                pass

    def remove_signal_handlers(self) -> None:
        if not self._signals:
            return
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    def _on_signal(self, sig: int) -> None:
        if not self._stop_requested.is_set():
            log.warning("%s: stopping intake, draining and flushing (send again to abort)", signal.Signals(sig).name)
            self.stop_signal = sig
            self.request_stop()
            return
        log.error("%s again: cancelling the sinks", signal.Signals(sig).name)
        for r in self.runners:
            if r.task is not None:
                r.task.cancel()

    # ------------------------------------------------------------------ intake
    @property
    def closed(self) -> bool:
        """True once a stop was requested (or the engine failed): no more commands are accepted."""
        return self._closing

    def submit_nowait(self, cmd: Command) -> None:
        """Queue `cmd`; raises IngressFull when the ingress queue is full, RuntimeClosed when stopping."""
        if self._closing:
            raise RuntimeClosed("the runtime is stopping")
        if len(self._ingress) >= self.ingress_capacity:
            raise IngressFull(f"ingress queue full ({self.ingress_capacity} commands)")
        self._ingress.append((cmd, None))
        self._idle.clear()
        self._has_input.set()

    async def submit(self, cmd: Command) -> None:
        """Queue `cmd`, waiting while the ingress queue is full."""
        while len(self._ingress) >= self.ingress_capacity and not self._closing:
            self._space.clear()
            await self._space.wait()
        if self._closing:
            raise RuntimeClosed("the runtime is stopping")
        self._ingress.append((cmd, None))
        self._idle.clear()
        self._has_input.set()

    async def submit_many(self, cmds: Iterable[Command]) -> int:
        """Queue every command of `cmds` in order (waiting for room as needed); returns how many."""
        n = 0
        ingress, cap = self._ingress, self.ingress_capacity
        for cmd in cmds:
            if len(ingress) >= cap or self._closing:
                self._has_input.set()
                await self.submit(cmd)
            else:
                ingress.append((cmd, None))
            n += 1
        self._idle.clear()
        self._has_input.set()
        return n

    async def request(self, cmd: Command) -> list[Event]:
        """Queue `cmd` and wait for the events it caused."""
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        while len(self._ingress) >= self.ingress_capacity and not self._closing:
            self._space.clear()
            await self._space.wait()
        if self._closing:
            raise RuntimeClosed("the runtime is stopping")
        self._ingress.append((cmd, fut))
        self._idle.clear()
        self._has_input.set()
        return await fut

    async def advance_to(self, ts: int) -> None:
        """Move virtual time to `ts` (timers due on the way fire in order)."""
        await self.submit(AdvanceClock(ts=ts))

    async def drain(self) -> None:
        """Wait until every command submitted so far has been applied (sinks may still be busy)."""
        while self._ingress or not self._idle.is_set():
            if self._engine_task is not None and self._engine_task.done():
                break
            await self._idle.wait()

    async def run_producer(
        self, commands: Iterator[Command], on_step: Callable[[Command, list[Event]], None] | None = None,
        speed: float | None = None, on_progress: Callable[[int], None] | None = None,
    ) -> bool:
        """Apply a command generator that reads the engine between commands (a scenario's traders).

        The generator is resumed only after the command it gave last has been
        applied, so what it decides is a function of the commands alone: the
        run is deterministic whatever the sinks do. While it runs, this task
        owns the engine (the ingress must be idle and nobody else submits);
        chunks of `burst` steps go to every sink's queue as usual, so a slow
        sink back-pressures (or gaps) exactly as with submitted commands.
        With `speed`, an AdvanceClock is applied only when the wall clock has
        caught up with its virtual time divided by `speed` (a live run); the
        steps applied before the wait are handed to the sinks first.

        A stop request (`request_stop`, a signal) is seen after every chunk
        handed to the sinks and ends a wait for the wall clock at once; the
        steps applied so far are handed to the sinks, the generator is not
        resumed. `on_progress(virtual_now)` is called after every chunk.
        Returns False if a stop was requested before the generator ended.
        """
        await self.drain()
        if self._closing:
            return False
        apply = self.engine.apply
        queues = [r.queue for r in self.runners]
        burst = self.burst
        perf = time.perf_counter
        pacer = Pacer(speed, self.engine.clock.now) if speed is not None else None
        stop = self._stop_requested
        chunk: list[tuple[Command, list[Event]]] = []
        n_events = 0
        finished = False
        self._idle.clear()
        if self.first_apply is None:
            self.first_apply = perf()
        try:
            for cmd in commands:
                if pacer is not None and type(cmd) is AdvanceClock:
                    delay = pacer.delay(cmd.ts)
                    if delay > 0:
                        n_events = await self._flush(queues, chunk, n_events)
                        chunk = []
                        if on_progress is not None:
                            on_progress(self.engine.clock.now)
                        if stop.is_set() or await self._wait_stop(delay):
                            break
                events = apply(cmd)
                if on_step is not None:
                    on_step(cmd, events)
                chunk.append((cmd, events))
                n_events += len(events)
                if len(chunk) >= burst:
                    n_events = await self._flush(queues, chunk, n_events)
                    chunk = []
                    if on_progress is not None:
                        on_progress(self.engine.clock.now)
                    if stop.is_set():
                        break
            else:
                finished = True
            await self._flush(queues, chunk, n_events)
            return finished
        finally:
            self.last_apply = perf()
            self._idle.set()

    async def _wait_stop(self, delay: float) -> bool:
        """Sleep `delay` seconds unless a stop is requested first; True if it was."""
        try:
            await asyncio.wait_for(self._stop_requested.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def pace(self, pacer: Pacer, ts: int) -> bool:
        """Wait until the wall clock reaches virtual time `ts` on `pacer`; False if a stop came first.

        For producers that `submit` (e.g. a journal's replay): call it before submitting each
        AdvanceClock to republish at `pacer.speed`.
        """
        if self._stop_requested.is_set():
            return False
        delay = pacer.delay(ts)
        return delay <= 0 or not await self._wait_stop(delay)

    async def _flush(self, queues: list[Any], chunk: list[tuple[Command, list[Event]]], n_events: int) -> int:
        """Hand a chunk of applied steps to every sink queue; returns 0 (the new event count)."""
        if chunk:
            self.commands += len(chunk)
            self.events += n_events
            for q in queues:
                await q.put(chunk, n_events)
        await asyncio.sleep(0)
        return 0

    # ------------------------------------------------------------------ engine task
    async def _engine_loop(self) -> None:
        ingress = self._ingress
        apply = self.engine.apply
        queues = [r.queue for r in self.runners]
        burst = self.burst
        perf = time.perf_counter
        has_timers = bool(self._heap)
        try:
            while True:
                if not ingress:
                    self._idle.set()
                    if self._closing:
                        return
                    self._has_input.clear()
                    await self._has_input.wait()
                    continue
                chunk: list[tuple[Command, list[Event]]] = []
                n_events = 0
                if self.first_apply is None:
                    self.first_apply = perf()
                for _ in range(min(burst, len(ingress))):
                    cmd, fut = ingress.popleft()
                    if has_timers and type(cmd) is AdvanceClock:
                        n_events += self._fire_timers(cmd, chunk)
                    events = apply(cmd)
                    chunk.append((cmd, events))
                    n_events += len(events)
                    if fut is not None and not fut.done():
                        fut.set_result(events)
                self.last_apply = perf()
                self.commands += len(chunk)
                self.events += n_events
                if not self._space.is_set():
                    self._space.set()
                for q in queues:
                    await q.put(chunk, n_events)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("engine task failed; stopping the runtime")
            self.error = exc
            self._closing = True
            self._stop_requested.set()
            while ingress:
                _cmd, fut = ingress.popleft()
                if fut is not None and not fut.done():
                    fut.set_exception(RuntimeClosed("the engine failed"))
        finally:
            self._idle.set()

    def _fire_timers(self, cmd: AdvanceClock, chunk: list[tuple[Command, list[Event]]]) -> int:
        """Apply the timers due up to `cmd.ts`, each at its own due time; returns the events caused."""
        heap, engine = self._heap, self.engine
        target = cmd.ts if type(cmd.ts) is int else -1
        n = 0
        while heap and heap[0][0] <= target:
            due, i, timer = heapq.heappop(heap)
            if due > engine.clock.now:
                step = AdvanceClock(ts=due)
                events = engine.apply(step)
                chunk.append((step, events))
                n += len(events)
            for c in timer.fn(engine, due):
                events = engine.apply(c)
                chunk.append((c, events))
                n += len(events)
            timer.next_ms = due + timer.interval_ms
            heapq.heappush(heap, (timer.next_ms, i, timer))
        return n

    async def _clock_loop(self, clock: RealTime) -> None:
        """Real time: an AdvanceClock every tick, virtual time = start + elapsed wall time × speed."""
        t0 = time.monotonic()
        start = self.engine.clock.now
        last = start
        period = clock.tick_ms / 1000.0 / clock.speed
        k = 0
        while not self._closing:
            k += 1
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = start + int((time.monotonic() - t0) * 1000.0 * clock.speed)
            if now > last:
                last = now
                try:
                    await self.submit(AdvanceClock(ts=now))
                except RuntimeClosed:
                    return

    # ------------------------------------------------------------------ reporting
    def engine_rate(self) -> float:
        """Events per second the engine task applied, from its first chunk to its latest."""
        if self.first_apply is None or self.last_apply is None or self.last_apply <= self.first_apply:
            return 0.0
        return self.events / (self.last_apply - self.first_apply)

    def stats(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "events": self.events,
            "last_seq": self.engine.seq,
            "ingress_depth": len(self._ingress),
            "engine_events_per_sec": round(self.engine_rate(), 1),
            "sinks": {r.sink.name: r.stats() for r in self.runners},
        }
