"""`exchange tail [FILTER ...]`: subscribe to the emulator's topics and print the events readably.

Per topic it checks `topic_seq`: a jump is reported as a gap (events the
subscriber did not get), a repeat as a duplicate (skipped). Filters are
relative to the prefix (`market/BTCUSDT/#`, `account/7/+`); the default is
everything under the prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any, TextIO

import msgspec

from exchange.cli_options import finite_number, int_at_least
from exchange.topics import DEFAULT_PREFIX, GapChecker, decode_payload, sniff_format

_HIDDEN = ("schema", "topic_seq", "type", "seq", "symbol_seq", "ts")


EPILOG = f"""\
examples:
  exchange tail --mqtt mqtt://127.0.0.1:1883            everything under {DEFAULT_PREFIX}/, until Ctrl-C
  exchange tail 'market/BTCUSDT/trades' 'account/7/#' --count 100
  exchange tail --quiet --timeout 60 && echo "no gap"   a minute of checking, gaps only

It stops after --count events, after --timeout seconds, or on SIGINT (Ctrl-C) / SIGTERM, and then
prints a summary line (messages, events, topics, gaps, duplicates) on standard error.

exit status: 0 stopped, no gap seen; 1 stopped, and at least one gap was seen (events missed:
a topic_seq jumped); 2 bad input or cannot start (an MQTT URL that is not mqtt://HOST:PORT, a
broker that cannot be reached, or the connection lost)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tail", help="print the events published on MQTT, checking per-topic sequence numbers",
        description="Subscribe to topic filters under the prefix and print every event as it arrives. Gaps in a "
                    "topic's topic_seq (events missed) and duplicates are reported.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("filters", nargs="*", default=["#"], metavar="FILTER",
                   help="topic filters relative to the prefix (default: #)")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="mqtt://HOST:PORT", help="the broker")
    p.add_argument("--mqtt-prefix", default=DEFAULT_PREFIX, metavar="PREFIX", help=f"default {DEFAULT_PREFIX}")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="subscription QoS (default 1)")
    p.add_argument("--count", type=int_at_least(0), default=0, help="stop after this many events (0: never)")
    p.add_argument("--timeout", type=finite_number(0, inclusive=True), default=0.0,
                   help="stop after this many seconds (0: never)")
    p.add_argument("--json", action="store_true", help="print each event as one JSON line (with its topic)")
    p.add_argument("--quiet", action="store_true", help="print only gaps and the summary")
    p.set_defaults(func=run)


def describe(topic: str, ev: dict[str, Any]) -> str:
    """One line for an event: topic, topic_seq, global seq, virtual time, type, fields."""
    fields = " ".join(f"{k}={v}" for k, v in ev.items() if k not in _HIDDEN)
    return (f"{topic} #{ev.get('topic_seq', '?')} seq={ev.get('seq', '?')} t={ev.get('ts', '?')} "
            f"{ev.get('type', '?')} {fields}").rstrip()


class Tail:
    """What `exchange tail` does with each message (kept apart from the network for tests)."""

    def __init__(self, out: TextIO, *, as_json: bool = False, quiet: bool = False) -> None:
        self.out = out
        self.as_json = as_json
        self.quiet = quiet
        self.checker = GapChecker()
        self.messages = 0
        self.events = 0
        self._enc = msgspec.json.Encoder()

    def message(self, topic: str, payload: bytes) -> int:
        """Handle one message; returns how many new events it carried."""
        self.messages += 1
        try:
            events = decode_payload(payload, sniff_format(payload))
        except Exception as exc:
            print(f"{topic}: undecodable payload ({exc})", file=self.out)
            return 0
        new = 0
        for ev in events:
            state = self.checker.check(topic, int(ev.get("topic_seq", 0)))
            if state == "dup":
                continue
            if state == "gap":
                _t, first, last = self.checker.gaps[-1]
                print(f"GAP {topic}: topic_seq {first}..{last} missing ({last - first + 1} events)", file=self.out)
            new += 1
            if self.quiet:
                continue
            if self.as_json:
                self.out.write(self._enc.encode({"topic": topic, **ev}).decode() + "\n")
            else:
                print(describe(topic, ev), file=self.out)
        self.events += new
        return new

    def summary(self) -> str:
        c = self.checker
        return (f"{self.messages} messages, {self.events} events on {len(c.last)} topics; "
                f"{len(c.gaps)} gaps ({c.missing} events missing), {c.duplicates} duplicates skipped")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 130


async def _tail(args: argparse.Namespace) -> int:
    import aiomqtt

    from exchange.mqtt_sink import parse_mqtt_url

    try:
        host, port = parse_mqtt_url(args.mqtt)
    except ValueError as exc:
        print(f"exchange tail: {exc}", file=sys.stderr)
        return 2
    prefix = args.mqtt_prefix.strip("/")
    filters = [f"{prefix}/{f.lstrip('/')}" if prefix else f for f in args.filters]
    tail = Tail(sys.stdout, as_json=args.json, quiet=args.quiet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        async with aiomqtt.Client(host, port) as client:
            for f in filters:
                await client.subscribe(f, qos=args.qos)
            print(f"# subscribed to {', '.join(filters)} on {args.mqtt}", file=sys.stderr)

            async def consume() -> None:
                async for msg in client.messages:
                    if not any(msg.topic.matches(f) for f in filters):
                        continue  # some brokers (amqtt) send retained messages to filters they do not match
                    tail.message(str(msg.topic), bytes(msg.payload))  # type: ignore[arg-type]
                    sys.stdout.flush()
                    if args.count and tail.events >= args.count:
                        stop.set()
                        return

            task = loop.create_task(consume())
            stopper = loop.create_task(stop.wait())
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # until --count (consume returns), --timeout, a signal, or the connection is lost (consume raises)
            await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # re-raises a lost connection's MqttError
    except aiomqtt.MqttError as exc:
        print(f"exchange tail: {args.mqtt}: {exc}", file=sys.stderr)
        if tail.messages:
            print(f"# {tail.summary()}", file=sys.stderr)
        return 2
    print(f"# {tail.summary()}", file=sys.stderr)
    return 1 if tail.checker.gaps else 0
