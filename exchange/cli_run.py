"""`exchange run`: the main job. A scenario, its events to a journal (and MQTT), a summary and a chart."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from exchange.cli_options import add_clock_options, add_runtime_options, pace_speed, positive_int

EPILOG = """\
examples:
  exchange run                          the built-in crash scenario: summary, journal and chart in out/
  exchange run wick --report-dir out/   another built-in: calm, crash, wick, funding-squeeze,
                                        add-margin-vs-partial-close
  exchange run my.toml --seed 3 --until 10m --summary-json out/summary.json
  exchange run crash --accounts 10000   ten thousand simulated traders in the same proportions
  exchange run calm --realtime --speed 10 --mqtt mqtt://127.0.0.1:1883    live, 10x, events over MQTT

stopping: SIGINT (Ctrl-C) or SIGTERM stops the run cleanly: no more commands, what was applied is
flushed to every sink, the journal is closed with its end line (`exchange replay` finds it identical
up to where it stopped), and the summary and chart cover the run so far. A second signal cuts the
flush short: each sink closes with what it has taken so far (MQTT stops waiting for its acks).

exit status: 0 done; 1 the run failed (an engine error, or money not conserved); 2 bad input or
cannot start (the scenario file: the message names file, line and field; a bad option value; an
MQTT broker that cannot be reached); 130 stopped early by SIGINT, 143 stopped early by SIGTERM."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a scenario (default: the built-in crash): summary, journal, chart",
        description="Run a scenario in virtual time (or live with --realtime): every event to a journal "
                    "file and, with --mqtt, to an MQTT broker; then print a summary and write a chart.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", nargs="?", default="crash", help="a built-in scenario's name or a TOML file")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--until", metavar="DURATION", help="stop after this much virtual time (e.g. 10m)")
    p.add_argument("--accounts", type=positive_int, metavar="N",
                   help="scale the simulated traders to about N accounts (N ≥ 1)")
    p.add_argument("--report-dir", default="out", metavar="DIR", help="where the chart (and default journal) go")
    p.add_argument("--summary-json", metavar="PATH", help="also write the summary as one JSON object")
    p.add_argument("--no-journal", action="store_true", help="do not write the default journal file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runtime_options(p)
    add_clock_options(p, what="the scenario (for bots that connect live)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exchange.scenario import ScenarioError, build, load_scenario

    try:
        scenario, path = load_scenario(args.scenario)
        built = build(scenario, path.parent, args.seed, args.accounts, args.until)
    except ScenarioError as e:
        print(f"exchange run: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"exchange run: {args.scenario}: {e}", file=sys.stderr)
        return 2
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    name = scenario.scenario.name
    if not args.journal and not args.no_journal:
        args.journal = str(report_dir / f"{name}.jsonl")
    config = {
        "engine_factory": "exchange.scenario:engine_from_config",
        "scenario_toml": path.read_text(),
        "scenario_name": name,
        "seed": built.seed,
        "accounts": args.accounts,
        "until": args.until,
    }
    try:
        return asyncio.run(_run(args, built, config, report_dir))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, built: Any, config: dict[str, Any], report_dir: Path) -> int:
    from exchange.cli_options import build_sinks
    from exchange.report import ChartSeries, write_chart
    from exchange.runtime import Runtime
    from exchange.scenario_run import scenario_commands
    from exchange.summary import RunSummary, render_table

    engine = built.engine
    name = built.scenario.scenario.name
    summary = RunSummary.for_engine(engine)
    chart = ChartSeries.for_engine(engine, scenario=name)

    def on_step(cmd: Any, events: list[Any]) -> None:
        summary.on_step(cmd, events)
        chart.on_step(cmd, events)

    progress = _Progress(built.duration_ms, quiet=args.quiet)
    try:
        sinks = build_sinks(args)
    except ValueError as e:  # e.g. an MQTT URL that is not mqtt://HOST:PORT
        print(f"exchange run: {e}", file=sys.stderr)
        return 2
    runtime = Runtime(engine, sinks=sinks, config=config)
    wall = time.perf_counter()
    runtime.install_signal_handlers()  # before the journal exists: a signal from now on stops cleanly
    try:
        await runtime.start()
    except OSError as e:  # ConnectionError, TimeoutError: a broker that cannot be reached, a journal path
        print(f"exchange run: cannot start: {e}", file=sys.stderr)
        return 2
    finished = False
    try:
        finished = await runtime.run_producer(scenario_commands(built), on_step, pace_speed(args),
                                              progress.update)
    finally:
        await runtime.stop()
    wall = time.perf_counter() - wall
    progress.done(engine.clock.now)
    if not finished:
        sig = runtime.stop_signal
        why = signal.Signals(sig).name if sig is not None else "a stop request"
        print(f"exchange run: stopped early by {why} at {_clock(engine.clock.now)} virtual; the journal and "
              f"the summary cover the run up to there", file=sys.stderr)
    chart_path = write_chart(chart, report_dir / f"{name}.png")
    result = summary.finish(engine, wall, str(chart_path))
    print(render_table(result))
    if args.journal:
        print(f"journal: {args.journal}")
    print(f"chart:   {chart_path}")
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(result, indent=2) + "\n")
    if not result.get("conserved", True):
        print("exchange run: balances do not add up to deposits: this is a bug", file=sys.stderr)
        return 1
    if finished:
        return 0
    return 128 + (runtime.stop_signal or signal.SIGINT)


class _Progress:
    """A progress bar in virtual time on standard error (a few plain lines when it is not a terminal)."""

    def __init__(self, total_ms: int, quiet: bool) -> None:
        self.total = max(total_ms, 1)
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_tenth = -1

    def update(self, now_ms: int) -> None:
        if self.quiet:
            return
        share = min(now_ms / self.total, 1.0)
        if self.tty:
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\r[{bar:<30}] {_clock(now_ms)} / {_clock(self.total)} virtual")
            sys.stderr.flush()
        elif int(share * 10) > self.last_tenth:
            self.last_tenth = int(share * 10)
            print(f"  {self.last_tenth * 10:3d}%  {_clock(now_ms)} / {_clock(self.total)} virtual", file=sys.stderr)

    def done(self, now_ms: int) -> None:
        if self.quiet:
            return
        self.update(now_ms)
        if self.tty:
            sys.stderr.write("\n")


def _clock(ms: int) -> str:
    s = ms // 1000
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
