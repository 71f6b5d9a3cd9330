"""`exchange replay FILE`: re-run a journal's commands and check the events, event by event."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections import deque
from typing import Any

import msgspec

from exchange.cli_options import add_runtime_options, build_sinks

EPILOG = """\
examples:
  exchange replay out/wick.jsonl        the journal `exchange run wick` wrote: "replay identical", or the
                                        first event that differs
  exchange replay out/wick.jsonl --events | head     also print the replayed events (JSON lines)
  exchange replay out/crash.jsonl --quiet            print nothing unless something differs (for scripts)
  exchange replay out/crash.jsonl --mqtt mqtt://127.0.0.1:1883    republish a run's events over MQTT

The journal is self-contained: its header describes the engine and its lines hold every command
(set-up, index prices, orders), so it replays from any directory, without the scenario file.

exit status: 0 every event identical; 1 the events differ (the first difference on standard error);
2 the file cannot be read, is not a journal, or its header describes no engine that can be built."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="re-run a journal and check that the engine gives the same events",
        description="Build the engine the journal's header describes, apply the journal's commands in order\n"
                    "and compare every event with the journal's, byte for byte. With --mqtt or --journal the\n"
                    "replayed events also go out through those sinks (a way to republish a run).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="a journal written with --journal")
    p.add_argument("--events", action="store_true", help="print every replayed event (JSON lines)")
    p.add_argument("--quiet", action="store_true", help="print nothing but a mismatch")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exchange.journal import JournalError, replay

    out = sys.stdout
    enc = msgspec.json.Encoder()
    try:
        sinks = build_sinks(args)
        if sinks:
            res = asyncio.run(_replay_through_runtime(args, sinks))
        else:
            on_step = None
            if args.events:
                def on_step(cmd: Any, events: list[Any]) -> None:
                    for ev in events:
                        out.buffer.write(enc.encode(ev) + b"\n")
            res = replay(args.file, on_step=on_step)
    except (JournalError, OSError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        # a journal that cannot be read, or whose header's configuration (a scenario's TOML) is not valid
        print(f"exchange replay: {exc}", file=sys.stderr)
        return 2
    if not res.ok:
        print(f"MISMATCH: {res.mismatches} events differ (journal {res.events} events, replay "
              f"{res.replayed_events})", file=sys.stderr)
        if res.first_mismatch is not None:
            print("first difference: " + msgspec.json.encode(res.first_mismatch).decode(), file=sys.stderr)
        return 1
    if not args.quiet:
        tail = "" if res.complete else " (the journal has no end line: the run was cut short)"
        print(f"{args.file}: {res.commands} commands, {res.events} events, last seq {res.last_seq}: "
              f"replay identical{tail}", file=sys.stderr if args.events else sys.stdout)
    return 0


async def _replay_through_runtime(args: argparse.Namespace, sinks: list[Any]) -> Any:
    """Replay inside a Runtime so that the events also reach `sinks`; compare them as they pass."""
    from exchange.journal import JournalReader, ReplayResult, engine_from_config
    from exchange.runtime import Runtime
    from exchange.sinks import CallbackSink

    reader = JournalReader(args.file)
    engine = engine_from_config(reader.config)
    res = ReplayResult()
    expected: deque[list[bytes]] = deque()
    enc = msgspec.json.Encoder().encode

    def check(chunk: list[Any]) -> None:
        for cmd, events in chunk:
            want = expected.popleft()
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
                                "command": msgspec.json.decode(enc(cmd)), "event_index": i,
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
    try:
        for cmd, raws in reader.steps():
            expected.append([bytes(r) for r in raws])
            res.commands += 1
            res.events += len(raws)
            await rt.submit(cmd)
            if rt.closed:
                break
    finally:
        await rt.stop()
    res.complete = reader.end is not None
    return res
