"""The `exchange` command line: one module per subcommand, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys

from exchange import cli_calc, cli_demo, cli_replay, cli_run, cli_tail

#: Subcommand modules, in the order `--help` lists them. Each has
#: `register(subparsers)` that adds its parser with `set_defaults(func=...)`,
#: `func(args) -> int` being the exit status.
SUBCOMMANDS = [cli_run, cli_demo, cli_calc, cli_replay, cli_tail]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange",
        description="A perpetual-futures exchange emulator (Binance USDⓈ-M model).",
        epilog="Start with: exchange run   (the built-in crash scenario)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
