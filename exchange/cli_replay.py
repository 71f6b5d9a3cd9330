"""`exchange replay FILE`: re-run a journal's commands and check the events, event by event."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tomllib
from collections import deque
from typing import Any

import msgspec

from exchange.cli_options import add_clock_options, add_runtime_options, build_sinks, pace_speed

EPILOG = """\
examples:
  exchange replay out/wick.jsonl        the journal `exchange run wick` wrote: "replay identical", or the
                                        first event that differs
  exchange replay out/wick.jsonl --events | head     also print the replayed events (JSON lines)
  exchange replay out/crash.jsonl --quiet            print nothing unless something differs (for scripts)
  exchange replay out/crash.jsonl --mqtt mqtt://127.0.0.1:1883    republish a run's events over MQTT
  exchange replay out/crash.jsonl --mqtt mqtt://127.0.0.1:1883 --speed 10
                                        ... paced: 10 virtual seconds of the run per wall second

The journal is self-contained: its header describes the engine and its lines hold every command
(set-up, index prices, orders), so it replays from any directory, without the scenario file.
With --realtime or --speed X every clock step of the journal waits until its virtual time, divided
by X, has passed on the wall clock (as `exchange run --realtime` paced it), so subscribers see the
run at that pace; the events are the journal's own, checked as usual.

SIGINT (Ctrl-C) or SIGTERM stops a replay cleanly: no more commands, the sinks flush and close,
and what was replayed so far has been checked.

exit status: 0 every event identical; 1 the events differ (the first difference on standard error);
2 the file cannot be read, is not a journal, or its header describes no engine that can be built,
or a sink cannot start (an MQTT broker that cannot be reached); 130 stopped early by SIGINT,
143 stopped early by SIGTERM (the events replayed until then were identical; a difference still
exits 1)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="re-run a journal and check that the engine gives the same events",
        description="Build the engine the journal's header describes, apply the journal's commands in order\n"
                    "and compare every event with the journal's, byte for byte. With --mqtt or --journal the\n"
                    "replayed events also go out through those sinks (a way to republish a run), at the\n"
                    "run's own pace or a multiple of it with --speed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="a journal written with --journal")
    p.add_argument("--events", action="store_true", help="print every replayed event (JSON lines)")
    p.add_argument("--quiet", action="store_true", help="print nothing but a mismatch")
    add_runtime_options(p)
    add_clock_options(p, what="the replay")
    p.set_defaults(func=run)


class _Terminated(BaseException):
    """SIGTERM during a replay without a runtime (no sink to flush): stop like Ctrl-C."""


def run(args: argparse.Namespace) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated

    previous: Any = None
    with contextlib.suppress(ValueError):  # not the main thread: no handler
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run(args)
    except KeyboardInterrupt:  # outside the runtime's own handlers (a replay with no sink: nothing to flush)
        print("exchange replay: stopped early by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print("exchange replay: stopped early by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from exchange.journal import JournalError, replay

    out = sys.stdout
    enc = msgspec.json.Encoder()
    stopped_by: int | None = None
    try:
        sinks = build_sinks(args)
    except ValueError as exc:  # e.g. an MQTT URL that is not mqtt://HOST:PORT
        print(f"exchange replay: {exc}", file=sys.stderr)
        return 2
    try:
        if sinks or pace_speed(args) is not None:
            res, stopped_by = asyncio.run(_replay_through_runtime(args, sinks))
        else:
            on_step = None
            if args.events:
                def on_step(cmd: Any, events: list[Any]) -> None:
                    for ev in events:
                        out.buffer.write(enc.encode(ev) + b"\n")
            res = replay(args.file, on_step=on_step)
    except BrokenPipeError:  # `--events | head`: the reader is gone (exchange.cli.main handles it)
        raise
    except (JournalError, OSError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        # a journal that cannot be read, or whose header's configuration (a scenario's TOML) is not valid;
        # a broker that cannot be reached (ConnectionError is an OSError)
        print(f"exchange replay: {exc}", file=sys.stderr)
        return 2
    if not res.ok:
        print(f"MISMATCH: {res.mismatches} events differ (journal {res.events} events, replay "
              f"{res.replayed_events})", file=sys.stderr)
        if res.first_mismatch is not None:
            print("first difference: " + msgspec.json.encode(res.first_mismatch).decode(), file=sys.stderr)
        return 1
    where = sys.stderr if args.events else sys.stdout
    if stopped_by is not None:
        print(f"{args.file}: stopped early by {signal.Signals(stopped_by).name} after {res.commands} commands, "
              f"{res.events} events, last seq {res.last_seq}: replay identical so far", file=where)
        return 128 + stopped_by
    if not args.quiet:
        tail = "" if res.complete else " (the journal has no end line: the run was cut short)"
        print(f"{args.file}: {res.commands} commands, {res.events} events, last seq {res.last_seq}: "
              f"replay identical{tail}", file=where)
    return 0


async def _replay_through_runtime(args: argparse.Namespace, sinks: list[Any]) -> tuple[Any, int | None]:
    """Replay inside a Runtime so that the events also reach `sinks` (paced with --speed); compare them as
    they pass. Returns the result and the signal that stopped the replay early (None: it ran to the end)."""
    from exchange.commands import AdvanceClock
    from exchange.journal import JournalReader, ReplayResult, engine_from_config
    from exchange.runtime import Pacer, Runtime, RuntimeClosed
    from exchange.sinks import CallbackSink

    reader = JournalReader(args.file)
    engine = engine_from_config(reader.config)
    res = ReplayResult()
    expected: deque[list[bytes]] = deque()
    enc = msgspec.json.Encoder().encode
    checked = 0

    def check(chunk: list[Any]) -> None:
        nonlocal checked
        for cmd, events in chunk:
            want = expected.popleft()
            checked += 1
            res.replayed_events += len(events)
            got = [enc(ev) for ev in events]
            if got != want:
                for i in range(max(len(got), len(want))):
                    g = got[i] if i < len(got) else None
                    w = want[i] if i < len(want) else None
                    if g != w:
                        res.mismatches += 1
                        if res.first_mismatch is None:
                            res.first_mismatch = {
                                "command_index": checked, "command": msgspec.json.decode(enc(cmd)),
                                "event_index": i,
                                "journal": msgspec.json.decode(w) if w else None,
                                "replayed": msgspec.json.decode(g) if g else None,
                            }
            if events:
                res.last_seq = events[-1].seq
            if args.events:
                for b in got:
                    sys.stdout.buffer.write(b + b"\n")

    verifier = CallbackSink(check)
    verifier.name = "replay-check"
    rt = Runtime(engine, sinks=[verifier, *sinks], config=reader.config.get("run"))
    rt.install_signal_handlers()
    await rt.start()
    speed = pace_speed(args)
    pacer = Pacer(speed, engine.clock.now) if speed is not None else None
    try:
        for cmd, raws in reader.steps():
            if pacer is not None and type(cmd) is AdvanceClock and not await rt.pace(pacer, cmd.ts):
                break
            want = [bytes(r) for r in raws]
            expected.append(want)
            try:
                await rt.submit(cmd)
            except RuntimeClosed:  # a signal closed the intake: this command was not accepted
                expected.pop()
                break
            res.commands += 1
            res.events += len(raws)
    finally:
        await rt.stop()
    res.complete = reader.end is not None
    return res, (rt.stop_signal if rt.stop_requested and not res.complete else None)
