"""The `exchange` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange",
        description="A perpetual-futures exchange emulator (Binance USDⓈ-M model).",
        epilog="Example: exchange demo",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="place a few orders and print the trades and the book",
                   description="Place a few orders on BTCUSDT and print every event, then the book.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from exchange.demo import run_demo

        return run_demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
