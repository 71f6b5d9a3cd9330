"""Running a built scenario: the stream of commands it produces, step by step.

`scenario_commands(built)` is a generator: it yields the set-up commands, then
for every step of virtual time the index updates, the clock tick, and what
each trader due at that step wants. Traders read the engine when the generator
resumes, that is after the consumer has applied the previous command, so the
consumer must apply each command before asking for the next. The same
generator serves the synchronous `drive` (tests, virtual time) and the async
runtime (journal, MQTT, real time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from exchange.commands import AdvanceClock, Command, UpdateIndex
from exchange.events import Event
from exchange.scenario import Built, opening_commands
from exchange.traders import MarketView, Trader


def scenario_commands(built: Built) -> Iterator[Command]:
    engine = built.engine
    view = MarketView(engine)
    yield from built.setup
    for symbol, feed in built.feeds.items():
        yield UpdateIndex(symbol=symbol, sources=[tuple(s) for s in feed.sources_at(0)])
    first = {symbol: engine.markets[symbol].data.index_price for symbol in built.feeds}  # type: ignore[union-attr]
    yield from opening_commands(built, first)
    # traders due at a step: those with (step + phase) % every == 0, found by bucket, not by a scan of all
    buckets: dict[int, list[list[tuple[int, Trader]]]] = {}
    for n, st in enumerate(built.traders):
        buckets.setdefault(st.every, [[] for _ in range(st.every)])[(-st.phase) % st.every].append((n, st.trader))
    for step, t in enumerate(range(built.step_ms, built.duration_ms + 1, built.step_ms)):
        for symbol, feed in built.feeds.items():
            yield UpdateIndex(symbol=symbol, sources=[tuple(s) for s in feed.sources_at(t)])
        yield AdvanceClock(ts=t)
        due = [item for every, slots in buckets.items() for item in slots[step % every]]
        if len(buckets) > 1:
            due.sort(key=lambda item: item[0])  # the scenario's order, whatever the buckets
        for _, trader in due:
            if not trader.retired:
                yield from trader.step(view)


def drive(built: Built, on_step: Callable[[Command, list[Event]], None] | None = None) -> int:
    """Apply every command of the scenario to its engine; return the number of events."""
    apply = built.engine.apply
    n = 0
    for cmd in scenario_commands(built):
        events = apply(cmd)
        n += len(events)
        if on_step is not None:
            on_step(cmd, events)
    return n
