"""`exchange demo`: a few orders on BTCUSDT, their events and the book."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="place a few orders and print the trades and the book",
                       description="Place a few orders on BTCUSDT and print every event, then the book.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exchange.demo import run_demo

    return run_demo()
