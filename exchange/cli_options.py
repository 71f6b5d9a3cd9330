"""Command-line options shared by every command that runs an engine, and what they build.

    add_runtime_options(parser)   --mqtt URL, --mqtt-qos, --mqtt-mode, --mqtt-prefix, --journal PATH (and a few more)
    add_clock_options(parser)     --realtime, --speed X: pace virtual time by the wall clock
    build_sinks(args)             the sinks those options ask for (journal first)
    pace_speed(args)              the speed factor those clock options ask for (None: as fast as possible)
    build_clock(args)             the runtime's clock configuration, for a runtime that makes its own ticks
    int_at_least, finite_number   argparse types with a lower bound (exit status 2); positive_int, positive_float

A command that runs an engine does, in short:

    runtime = Runtime(engine, sinks=build_sinks(args), config={...})
    runtime.install_signal_handlers()
    await runtime.start()
    await runtime.run_producer(commands, speed=pace_speed(args))   # or: submit, with runtime.pace(...)
    await runtime.stop()

A command whose commands carry their own AdvanceClock (a scenario, a journal) paces
those (`pace_speed`); one that serves bots with no clock of its own would give the
runtime `build_clock(args)`, whose RealTime clock task submits the ticks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from exchange.runtime import ClockConfig, RealTime, VirtualTime
from exchange.sinks import Sink
from exchange.topics import DEFAULT_PREFIX


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("event output (MQTT and journal)")
    g.add_argument("--mqtt", metavar="mqtt://HOST:PORT", help="publish every event to this MQTT broker")
    g.add_argument("--mqtt-qos", type=int, choices=(0, 1), default=1,
                   help="QoS of the messages (default 1: nothing lost across reconnects)")
    g.add_argument("--mqtt-mode", choices=("event", "batch"), default="batch",
                   help="one message per event, or per topic a batch of events (default: batch)")
    g.add_argument("--mqtt-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
                   help=f"first level of every topic, so emulators can share a broker (default: {DEFAULT_PREFIX})")
    g.add_argument("--mqtt-format", choices=("json", "msgpack"), default="json", help="payload encoding (default json)")
    g.add_argument("--mqtt-batch-window", type=float, default=20.0, metavar="MS",
                   help="batch mode: longest wait of an event in a batch, ms; 0 = one batch per engine step "
                        "(default 20)")
    g.add_argument("--mqtt-batch-max", type=int, default=1000, metavar="N", help="batch mode: events per message")
    g.add_argument("--mqtt-overflow", choices=("block", "drop"), default="block",
                   help="when the sink's queue is full: the engine waits (block), or drops with a counted gap")
    g.add_argument("--mqtt-inline", action="store_true",
                   help="publish from the engine's process instead of a worker process")
    g.add_argument("--journal", metavar="PATH", help="append every command and event to this JSON-lines file")


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer ≥ `low` (anything else: exit status 2 with the reason)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value
    return parse


def finite_number(low: float, *, inclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite number above `low` (or equal to it, if `inclusive`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ((low <= value) if inclusive else (low < value)) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'more than'} {low:g}, "
                                             f"not {text}")
        return value
    return parse


positive_int = int_at_least(1)
positive_float = finite_number(0, inclusive=False)


def add_clock_options(parser: argparse.ArgumentParser, *, what: str = "virtual time") -> None:
    """--realtime and --speed X: pace `what` by the wall clock instead of running as fast as possible."""
    g = parser.add_argument_group("clock (default: virtual time, as fast as possible)")
    g.add_argument("--realtime", action="store_true",
                   help=f"pace {what} by the wall clock: one virtual second per second, unless --speed")
    g.add_argument("--speed", type=positive_float, metavar="X",
                   help="virtual seconds per wall second (implies --realtime), e.g. 10 or 0.5")


def pace_speed(args: argparse.Namespace) -> float | None:
    """The speed factor the clock options ask for, or None: as fast as possible."""
    speed = getattr(args, "speed", None)
    if speed is not None:
        return float(speed)
    return 1.0 if getattr(args, "realtime", False) else None


def build_sinks(args: argparse.Namespace) -> list[Sink]:
    """The journal (if --journal) then the MQTT sink (if --mqtt)."""
    sinks: list[Sink] = []
    if getattr(args, "journal", None):
        from exchange.journal import JournalSink

        sinks.append(JournalSink(args.journal))
    if getattr(args, "mqtt", None):
        from exchange.mqtt_sink import MqttSink

        sinks.append(MqttSink(
            args.mqtt, qos=args.mqtt_qos, mode=args.mqtt_mode, prefix=args.mqtt_prefix,
            payload_format=getattr(args, "mqtt_format", "json"),
            batch_window=getattr(args, "mqtt_batch_window", 20.0) / 1000.0,
            batch_max_events=getattr(args, "mqtt_batch_max", 1000),
            policy=getattr(args, "mqtt_overflow", "block"),
            worker="inline" if getattr(args, "mqtt_inline", False) else "process",
        ))
    return sinks


def build_clock(args: argparse.Namespace, *, tick_ms: int = 100, start_ms: int = 0) -> ClockConfig:
    """For a runtime that makes its own clock ticks: RealTime at the requested pace, else VirtualTime.

    Not for a command whose commands hold their own AdvanceClock (run, replay): the ticks of a
    RealTime clock would be commands of their own, so those pace theirs with `pace_speed`.
    """
    speed = pace_speed(args)
    if speed is not None:
        return RealTime(speed=speed, tick_ms=tick_ms, start_ms=start_ms)
    return VirtualTime(start_ms=start_ms)
