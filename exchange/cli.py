"""The `exchange` command line: one module per subcommand, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import os
import sys

from exchange import cli_calc, cli_demo, cli_replay, cli_run, cli_tail

#: Subcommand modules, in the order `--help` lists them. Each has
#: `register(subparsers)` that adds its parser with `set_defaults(func=...)`,
#: `func(args) -> int` being the exit status.
SUBCOMMANDS = [cli_run, cli_demo, cli_calc, cli_replay, cli_tail]

#: Standard output was closed before the command finished (`exchange ... | head`): 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141

EPILOG = """\
examples (one per command; `exchange COMMAND --help` for more):
  exchange run                          the built-in crash scenario: progress, summary, journal and chart in out/
  exchange demo                         a few orders on BTCUSDT: every event, then the book
  exchange calc --entry 80000 --side long --leverage 10 --margin 1000 --add-margin 500
                                        liquidation price now, after adding margin, after a partial close
  exchange replay out/crash.jsonl       re-run a journal and check every event ("replay identical")
  exchange tail --mqtt mqtt://127.0.0.1:1883    print the events a run publishes, checking for gaps

exit status, the same for every command:
  0    done, and nothing wrong was found
  1    the command ran and found something wrong: `run` an engine error or money not conserved,
       `replay` events that differ, `tail` a gap in a topic's sequence numbers
  2    bad usage or input, or cannot start: an unknown option or a bad value (argparse), a
       scenario or journal that cannot be read, an MQTT broker that cannot be reached
  130  stopped early by SIGINT (Ctrl-C); 143 by SIGTERM (`run`, `replay`): intake stopped, what was
       applied is flushed and the journal closed, so it replays identical up to there
  141  standard output was closed early (e.g. `exchange replay FILE --events | head`)
`tail` runs until stopped: Ctrl-C or SIGTERM ends it with 0 or 1 as above."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange",
        description="A perpetual-futures exchange emulator (Binance USDⓈ-M model).\n"
                    "Start with: exchange run   (the built-in crash scenario, no broker needed)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader of standard output went away: no traceback, and no second error when Python
        # flushes stdout at exit (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
