"""Command-line options shared by every command that runs an engine, and what they build.

    add_runtime_options(parser)   --mqtt URL, --mqtt-qos, --mqtt-mode, --mqtt-prefix, --journal PATH (and a few more)
    add_clock_options(parser)     --clock virtual|real, --speed, --tick-ms
    build_sinks(args)             the sinks those options ask for (journal first)
    build_clock(args)             the runtime's clock configuration

A command that runs an engine does, in short:

    runtime = Runtime(engine, sinks=build_sinks(args), clock=build_clock(args), config={...})
    runtime.install_signal_handlers()
    await runtime.serve()          # or: start, submit commands, stop
"""

from __future__ import annotations

import argparse

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


def add_clock_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("clock")
    g.add_argument("--clock", choices=("virtual", "real"), default="virtual",
                   help="virtual: as fast as possible; real: paced by the wall clock (default virtual)")
    g.add_argument("--speed", type=float, default=1.0, help="real clock: virtual seconds per wall second")
    g.add_argument("--tick-ms", type=int, default=100, help="real clock: virtual ms between clock steps")
    g.add_argument("--start-ms", type=int, default=0, help="virtual time at the start, ms")


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


def build_clock(args: argparse.Namespace) -> ClockConfig:
    start = getattr(args, "start_ms", 0)
    if getattr(args, "clock", "virtual") == "real":
        return RealTime(speed=args.speed, tick_ms=args.tick_ms, start_ms=start)
    return VirtualTime(start_ms=start)
