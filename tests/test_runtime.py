"""The runtime: ingress order, request/response, clock and timers, sink queues and their overflow policy,
clean shutdown (also on SIGTERM, in a child process)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from bench.random_flow import random_flow
from exchange.commands import AdvanceClock, PlaceOrder, SetMarkPrice
from exchange.engine import Engine
from exchange.enums import Side
from exchange.events import Event, MarkPriceUpdated, OrderAccepted
from exchange.journal import JournalReader, JournalSink, replay
from exchange.runtime import IngressFull, RealTime, Runtime, RuntimeClosed, Timer, VirtualTime, mark_price_timer
from exchange.sinks import CollectSink, OverflowPolicy, Sink

ROOT = Path(__file__).resolve().parents[1]
enc = msgspec.json.Encoder().encode


def direct(cmds: list) -> list[Event]:
    engine = Engine()
    return [ev for c in cmds for ev in engine.apply(c)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_runtime_applies_in_arrival_order_and_fans_out_the_same_events_to_every_sink():
    cmds = list(random_flow(11, 3000))
    a, b = CollectSink(), CollectSink(capacity=100)

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[a, b], burst=64)
        async with rt:
            await rt.submit_many(cmds[:1000])
            for c in cmds[1000:]:
                await rt.submit(c)
        return rt

    rt = run(main())
    want = direct(cmds)
    assert [enc(e) for e in a.events] == [enc(e) for e in want]
    assert [enc(e) for e in b.events] == [enc(e) for e in want]
    assert [c for c, _ in a.steps] == cmds
    assert a.events[0] is b.events[0]  # events leave the engine once, shared by the sinks
    assert rt.commands == len(cmds) and rt.events == len(want)
    assert [e.seq for e in a.events] == list(range(1, len(want) + 1))


def test_request_returns_the_events_of_its_command():
    async def main() -> list[Event]:
        async with Runtime(Engine()) as rt:
            await rt.request(SetMarkPrice(symbol="BTCUSDT", price=800_000))
            return await rt.request(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.BUY, qty=5, price=799_990))

    events = run(main())
    assert len(events) == 1 and isinstance(events[0], OrderAccepted)


def test_ingress_is_bounded():
    async def main() -> None:
        rt = Runtime(Engine(), ingress_capacity=10)
        await rt.start()
        try:
            for _ in range(10):
                rt.submit_nowait(AdvanceClock(ts=0))
            with pytest.raises(IngressFull):
                rt.submit_nowait(AdvanceClock(ts=0))
            await rt.submit(AdvanceClock(ts=1))  # waits for room, then goes in
            await rt.drain()
            assert rt.commands == 11
        finally:
            await rt.stop()
        with pytest.raises(RuntimeClosed):
            rt.submit_nowait(AdvanceClock(ts=2))
        with pytest.raises(RuntimeClosed):
            await rt.submit(AdvanceClock(ts=2))

    run(main())


def test_timers_fire_at_their_due_times_in_virtual_time_and_the_journal_replays(tmp_path):
    fired: list[int] = []

    def tick(engine: Engine, now: int) -> list:
        fired.append(now)
        return [SetMarkPrice(symbol="ETHUSDT", price=300_000 + now)]

    path = tmp_path / "j.jsonl"
    sink = CollectSink()

    async def main() -> None:
        rt = Runtime(Engine(), sinks=[JournalSink(path), sink], timers=[Timer("t", 250, tick)])
        async with rt:
            await rt.advance_to(600)
            await rt.advance_to(1000)
            await rt.advance_to(1010)

    run(main())
    assert fired == [250, 500, 750, 1000]
    marks = [e for e in sink.events if isinstance(e, MarkPriceUpdated)]
    assert [(e.ts, e.mark_price) for e in marks] == [(t, 300_000 + t) for t in fired]
    cmds = [c for c, _ in sink.steps]
    assert [c.ts for c in cmds if isinstance(c, AdvanceClock)] == [250, 500, 600, 750, 1000, 1000, 1010]
    res = replay(path)  # no timers in the replay: the journal has their commands
    assert res.ok and res.complete and res.commands == len(cmds)


def test_mark_price_timer_sets_the_mid():
    cmds = [SetMarkPrice(symbol="BTCUSDT", price=800_000),
            PlaceOrder(account=1, symbol="BTCUSDT", side=Side.BUY, qty=5, price=799_990),
            PlaceOrder(account=2, symbol="BTCUSDT", side=Side.SELL, qty=5, price=800_030),
            AdvanceClock(ts=1000)]
    sink = CollectSink()

    async def main() -> None:
        async with Runtime(Engine(), sinks=[sink], timers=[mark_price_timer(1000)]) as rt:
            await rt.submit_many(cmds)

    run(main())
    marks = [e for e in sink.events if isinstance(e, MarkPriceUpdated)]
    assert marks[-1].mark_price == 800_010 and marks[-1].ts == 1000


def test_real_time_clock_paces_virtual_time_by_the_speed_factor():
    sink = CollectSink()

    async def main() -> tuple[float, int]:
        rt = Runtime(Engine(), sinks=[sink], clock=RealTime(speed=20.0, tick_ms=100, start_ms=5_000))
        t0 = time.monotonic()
        async with rt:
            await asyncio.sleep(0.5)
            now = rt.engine.clock.now
        return time.monotonic() - t0, now

    wall, now = run(main())
    advanced = now - 5_000
    assert 0.5 * 20 * 1000 * 0.6 <= advanced <= wall * 20 * 1000 * 1.1
    ticks = [c.ts for c, _ in sink.steps if isinstance(c, AdvanceClock)]
    assert ticks == sorted(ticks) and len(ticks) >= 20
    assert all(not evs for _c, evs in sink.steps)  # every tick accepted (none rejected as going back)


def test_virtual_time_start():
    async def main() -> int:
        async with Runtime(Engine(), clock=VirtualTime(start_ms=1_000)) as rt:
            return rt.engine.clock.now

    assert run(main()) == 1_000


# ------------------------------------------------------------------ full queues: the overflow policy
def _flow(n: int) -> list:
    return list(random_flow(5, n))


def test_block_policy_stalls_the_engine_loses_nothing_and_counts_the_wait():
    cmds = _flow(4000)
    sink = CollectSink(capacity=500, policy=OverflowPolicy.BLOCK)

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[sink], burst=32)
        await rt.start()
        sink.stall()
        await rt.submit_many(cmds)
        await asyncio.sleep(0.3)
        applied_while_stalled = rt.events
        q = rt.runners[0].queue
        assert q.depth <= 500 + 200  # capacity + one chunk
        assert rt.events < len(direct(cmds))  # the engine waits for the sink
        sink.resume()
        await rt.stop()
        rt.applied_while_stalled = applied_while_stalled  # type: ignore[attr-defined]
        return rt

    rt = run(main())
    st = rt.runners[0].queue.stats()
    assert st["blocked_times"] >= 1 and st["blocked_seconds"] >= 0.25
    assert st["dropped_events"] == 0 and st["gaps"] == 0
    assert [enc(e) for e in sink.events] == [enc(e) for e in direct(cmds)]


def test_drop_policy_never_stalls_the_engine_and_reports_every_dropped_event(caplog):
    cmds = _flow(4000)
    slow = CollectSink(capacity=300, policy=OverflowPolicy.DROP)
    fast = CollectSink()

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[slow, fast], burst=32)
        await rt.start()
        slow.stall()
        await rt.submit_many(cmds)
        await rt.drain()  # the engine finished while the slow sink consumed nothing
        assert rt.commands == len(cmds)
        slow.resume()
        await rt.stop()
        return rt

    rt = run(main())
    want = direct(cmds)
    st = rt.runners[0].queue.stats()
    assert st["blocked_times"] == 0
    assert st["dropped_events"] > 0 and st["gaps"] >= 1
    got = slow.events
    gap_events = sum(g.events for g in slow.gaps)
    assert gap_events == st["dropped_events"] and len(got) + gap_events == len(want)
    # what was kept is in order, and each gap names exactly the seqs that are missing
    kept = {e.seq for e in got}
    for g in slow.gaps:
        assert all(s not in kept for s in range(g.first_seq, g.last_seq + 1))
    assert sorted(kept | {s for g in slow.gaps for s in range(g.first_seq, g.last_seq + 1)}) == \
        list(range(1, len(want) + 1))
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert len(fast.events) == len(want)  # the other sink got everything
    assert "dropped" in caplog.text


def test_block_with_timeout_drops_after_the_stated_bound_then_recovers():
    cmds = _flow(3000)
    sink = CollectSink(capacity=200, policy=OverflowPolicy.BLOCK, block_timeout=0.2)

    async def main() -> tuple[Runtime, float]:
        rt = Runtime(Engine(), sinks=[sink], burst=32)
        await rt.start()
        sink.stall()
        t0 = time.monotonic()
        await rt.submit_many(cmds)
        await rt.drain()
        took = time.monotonic() - t0
        sink.resume()
        await rt.stop()
        return rt, took

    rt, took = run(main())
    st = rt.runners[0].queue.stats()
    assert st["dropped_events"] > 0
    assert took < 2.0  # blocked about once for 0.2 s, not once per chunk
    assert st["blocked_times"] <= 3
    assert len(sink.events) + sum(g.events for g in sink.gaps) == len(direct(cmds))


class _FailingSink(Sink):
    name = "failing"

    async def handle(self, chunk) -> None:
        raise RuntimeError("boom")


def test_a_failing_sink_does_not_stall_the_engine():
    cmds = _flow(2000)
    ok = CollectSink()

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[_FailingSink(capacity=100), ok], burst=32)
        async with rt:
            await rt.submit_many(cmds)
            await rt.drain()
        return rt

    rt = run(main())
    assert len(ok.events) == len(direct(cmds))
    assert rt.runners[0].queue.stats()["dropped_events"] > 0


# ------------------------------------------------------------------ shutdown
def test_stop_applies_what_was_accepted_then_closes_the_sinks(tmp_path):
    cmds = _flow(5000)
    path = tmp_path / "j.jsonl"

    async def main() -> Runtime:
        rt = Runtime(Engine(), sinks=[JournalSink(path)])
        await rt.start()
        await rt.submit_many(cmds)
        await rt.stop()  # no drain first: stop itself applies what is queued
        return rt

    rt = run(main())
    assert rt.commands == len(cmds)
    r = JournalReader(path)
    assert sum(1 for _ in r.steps()) == len(cmds) and r.end is not None


SIGTERM_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from bench.random_flow import random_flow
    from exchange.engine import Engine
    from exchange.journal import JournalSink
    from exchange.runtime import RealTime, Runtime, RuntimeClosed

    async def main():
        rt = Runtime(Engine(), sinks=[JournalSink(sys.argv[1])], clock=RealTime(speed=10.0, tick_ms=50))
        rt.install_signal_handlers()
        await rt.start()
        async def produce():
            try:
                for cmd in random_flow(1, 10**7):
                    await rt.submit(cmd)
                    await asyncio.sleep(0)
            except RuntimeClosed:
                pass
        task = asyncio.get_running_loop().create_task(produce())
        print("ready", flush=True)
        await rt.wait_stop_requested()
        await rt.stop()
        await task
        print("stopped", rt.commands, flush=True)

    asyncio.run(main())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_intake_drains_flushes_and_closes(tmp_path, sig):
    path = tmp_path / "j.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    applied = int(out.split()[-1])
    assert applied > 100
    res = replay(path)
    assert res.ok and res.complete and res.commands == applied


# ------------------------------------------------------------------ a stop request closes the intake
def test_a_stop_request_closes_the_intake_at_once_and_applies_what_was_accepted(tmp_path):
    """request_stop (what SIGINT/SIGTERM call): submit* raise RuntimeClosed and `closed` is true at once, before
    stop() runs; every command accepted before is still applied and reaches every sink and the journal."""
    cmds = _flow(3000)
    path = tmp_path / "j.jsonl"
    sink = CollectSink()

    async def main() -> tuple[Runtime, list[str]]:
        rt = Runtime(Engine(), sinks=[JournalSink(path), sink], ingress_capacity=100_000)
        await rt.start()
        await rt.submit_many(cmds)  # accepted; the engine has not applied them all yet
        assert not rt.closed
        rt.request_stop()
        refused = []
        assert rt.closed and rt.stop_requested  # stop() has not run
        for attempt in (rt.submit(cmds[0]), rt.request(cmds[0]), rt.submit_many(cmds[:3]), rt.advance_to(10**9)):
            try:
                await attempt
            except RuntimeClosed:
                refused.append("closed")
        try:
            rt.submit_nowait(cmds[0])
        except RuntimeClosed:
            refused.append("closed")
        await asyncio.sleep(0.05)
        await rt.stop()
        return rt, refused

    rt, refused = run(main())
    assert refused == ["closed"] * 5
    assert rt.commands == len(cmds)  # nothing accepted was lost
    assert [enc(e) for e in sink.events] == [enc(e) for e in direct(cmds)]
    res = replay(path)
    assert res.ok and res.complete and res.commands == len(cmds)


def test_a_stop_request_wakes_a_submitter_blocked_on_a_full_ingress():
    cmds = _flow(50)

    async def main() -> str:
        stalled = CollectSink(capacity=1, policy=OverflowPolicy.BLOCK)
        stalled.stall()  # the engine blocks on this sink's queue, so the ingress stays full
        rt = Runtime(Engine(), sinks=[stalled], ingress_capacity=4, burst=1)
        await rt.start()
        for c in cmds[:4]:
            await rt.submit(c)
        for _ in range(20):
            await asyncio.sleep(0)
        fill = len(rt._ingress)
        while len(rt._ingress) < rt.ingress_capacity:
            rt.submit_nowait(cmds[fill])
            fill += 1
        blocked = asyncio.get_running_loop().create_task(rt.submit(cmds[-1]))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # waiting for room
        rt.request_stop()
        try:
            await asyncio.wait_for(blocked, 2)
            outcome = "accepted"
        except RuntimeClosed:
            outcome = "closed"
        stalled.resume()
        await rt.stop()
        return outcome

    assert run(main()) == "closed"


def _producer(cmds: list, rt_box: list, stop_after: int | None = None):
    for i, c in enumerate(cmds):
        if stop_after is not None and i == stop_after:
            rt_box[0].request_stop()  # as a signal handler would, between two commands
        yield c


def test_run_producer_stops_at_the_next_chunk_after_a_stop_request_and_flushes_what_it_applied(tmp_path):
    cmds = _flow(5000)
    path = tmp_path / "j.jsonl"
    box: list = []

    async def main() -> tuple[Runtime, bool]:
        rt = Runtime(Engine(), sinks=[JournalSink(path)], burst=256)
        box.append(rt)
        await rt.start()
        finished = await rt.run_producer(_producer(cmds, box, stop_after=1000))
        await rt.stop()
        return rt, finished

    rt, finished = run(main())
    assert not finished
    assert 1000 <= rt.commands <= 1000 + 256  # at most the rest of the chunk it was in
    res = replay(path)
    assert res.ok and res.complete and res.commands == rt.commands


def test_a_paced_run_producer_stops_during_its_wait_for_the_wall_clock(tmp_path):
    """speed 1 and an AdvanceClock a minute ahead: the wait ends as soon as the stop is requested (the
    review's `run --realtime` could not be stopped), and the steps applied before the wait are flushed."""
    cmds = _flow(300)
    path = tmp_path / "j.jsonl"

    async def main() -> tuple[Runtime, bool, float]:
        rt = Runtime(Engine(), sinks=[JournalSink(path)])
        await rt.start()
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, rt.request_stop)
        t0 = time.monotonic()
        finished = await rt.run_producer(iter([*cmds, AdvanceClock(ts=60_000), *cmds]), speed=1.0)
        took = time.monotonic() - t0
        await rt.stop()
        return rt, finished, took

    rt, finished, took = run(main())
    assert not finished
    assert took < 5.0
    assert rt.commands == len(cmds)  # everything before the clock step, nothing after
    res = replay(path)
    assert res.ok and res.complete and res.commands == len(cmds)


def test_a_paced_run_producer_keeps_to_the_speed():
    steps = [AdvanceClock(ts=t) for t in range(100, 2001, 100)]  # 2 virtual seconds

    async def main() -> tuple[bool, float]:
        rt = Runtime(Engine())
        await rt.start()
        t0 = time.monotonic()
        finished = await rt.run_producer(iter(steps), speed=4.0)
        took = time.monotonic() - t0
        await rt.stop()
        return finished, took

    finished, took = run(main())
    assert finished
    assert 0.45 <= took < 3.0  # 2 s / 4 = 0.5 s


def test_pace_waits_for_the_wall_clock_and_gives_up_on_a_stop_request():
    from exchange.runtime import Pacer

    async def main() -> tuple[bool, float, bool, float]:
        rt = Runtime(Engine())
        await rt.start()
        pacer = Pacer(2.0, 0)
        t0 = time.monotonic()
        ok = await rt.pace(pacer, 400)  # 0.4 virtual s at 2x: 0.2 s
        waited = time.monotonic() - t0
        asyncio.get_running_loop().call_later(0.1, rt.request_stop)
        t1 = time.monotonic()
        stopped = await rt.pace(pacer, 3_600_000)
        gave_up = time.monotonic() - t1
        await rt.stop()
        return ok, waited, stopped, gave_up

    ok, waited, stopped, gave_up = run(main())
    assert ok and 0.15 <= waited < 2.0
    assert not stopped and gave_up < 2.0
    with pytest.raises(ValueError):
        Pacer(0, 0)
