"""`exchange demo`: a few orders on BTCUSDT, their events and the book."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  exchange demo                 makers quote around 80,000, a taker sweeps, an amend, a cancel and two
                                rejects: every event with its sequence number, then the book
  exchange demo | grep TRADE    just the trades

No broker, no files: it runs the engine directly, in well under a second.

exit status: 0 done (the demo has no input that can be wrong)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="place a few orders and print the trades and the book",
                       description="Place a few orders on BTCUSDT and print every event, then the book.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exchange.demo import run_demo

    return run_demo()
