"""`exchange calc`: the margin rules as a tool, without running an exchange."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from exchange.calculator import CalcError, calculate

EXAMPLE_IN = {
    "profile": "binance",
    "positions": [{"symbol": "BTCUSDT", "side": "long", "qty": "0.125", "entry_price": "80000",
                   "margin_mode": "isolated", "isolated_margin": "1000"}],
    "what_if": [{"add_margin": {"symbol": "BTCUSDT", "side": "long", "amount": "500"}},
                {"mark": {"symbol": "BTCUSDT", "price": "70000"}}],
}

DESCRIPTION = f"""\
Compute margin balance, maintenance margin, margin ratio, and the liquidation
and bankruptcy price of every position, with the engine's own functions.

JSON form: read one JSON document from FILE (or standard input) and print one.
Input fields: profile ("binance" | "entry-notional"), position_mode ("one-way" |
"hedge"), wallet_balance (cross wallet; required if any position is cross),
positions [{{symbol, side "long"|"short", qty, entry_price, mark_price (default:
entry), margin_mode "cross"|"isolated", isolated_margin (isolated; or leverage to
use the initial margin), leverage, mmr and cum (a fixed bracket; required for a
symbol other than BTCUSDT/ETHUSDT)}}], what_if [{{"add_margin": {{symbol, side,
amount}}}} | {{"close": {{symbol, side, qty}}}} | {{"mark": {{symbol, price}}}}].
Numbers may be JSON numbers or decimal strings; output numbers are exact decimal
strings (null where a price does not exist, e.g. a fully collateralised long).

Worked example (seed: 80,000 long at 10x with 1,000 USDT isolated margin):
  echo '{json.dumps(EXAMPLE_IN)}' | exchange calc
  -> liquidation_price 72289.15662651, then 68273.09236948 after +500,
     what_if[1] shows the same position at a mark of 70,000.

Human form: exchange calc --entry 80000 --side long --leverage 10 --margin 1000 --add-margin 500
prints a table: the position now, after adding the margin, and after closing
instead the quantity whose initial margin equals that amount (side by side).

Exit status: 0 ok, 2 bad input (the message names the field)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calc", help="margin calculator: liquidation price, margin ratio, what-if",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="JSON input file (default: standard input)")
    p.add_argument("--entry", help="human form: entry price")
    p.add_argument("--side", choices=["long", "short"], default="long", help="human form: position side")
    p.add_argument("--leverage", help="human form: leverage (qty = margin × leverage / entry unless --qty)")
    p.add_argument("--margin", help="human form: isolated margin")
    p.add_argument("--qty", help="human form: quantity (base units)")
    p.add_argument("--mark", help="human form: mark price (default: entry)")
    p.add_argument("--add-margin", help="human form: margin to add, compared with a partial close")
    p.add_argument("--symbol", default="BTCUSDT", help="human form: symbol (default BTCUSDT)")
    p.add_argument("--profile", default="binance", help="venue profile: binance (default) or entry-notional")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.entry is not None:
            return _human(args)
        text = Path(args.file).read_text() if args.file else sys.stdin.read()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise CalcError(f"input: not valid JSON ({e})") from None
        print(json.dumps(calculate(doc), indent=2))
        return 0
    except CalcError as e:
        print(f"exchange calc: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"exchange calc: {e}", file=sys.stderr)
        return 2


def _human(args: argparse.Namespace) -> int:
    if args.margin is None or (args.leverage is None and args.qty is None):
        raise CalcError("--margin and one of --leverage or --qty are required with --entry")
    entry = Decimal(args.entry)
    if args.qty is not None:
        qty = Decimal(args.qty)
    else:
        qty = (Decimal(args.margin) * Decimal(args.leverage) / entry).normalize()
    pos: dict[str, Any] = {"symbol": args.symbol, "side": args.side, "qty": str(qty), "entry_price": args.entry,
                           "margin_mode": "isolated", "isolated_margin": args.margin}
    if args.mark:
        pos["mark_price"] = args.mark
    rows = [("now", {"profile": args.profile, "positions": [pos]}, -1)]
    if args.add_margin:
        add = {"add_margin": {"symbol": args.symbol, "side": args.side, "amount": args.add_margin}}
        rows.append((f"add {args.add_margin} margin", {"profile": args.profile, "positions": [pos],
                                                        "what_if": [add]}, 0))
        lev = Decimal(args.leverage) if args.leverage else entry * qty / Decimal(args.margin)
        close_qty = min(qty, (Decimal(args.add_margin) * lev / entry).quantize(Decimal(1).scaleb(-6)))
        close = {"close": {"symbol": args.symbol, "side": args.side, "qty": str(close_qty.normalize())}}
        rows.append((f"close {close_qty.normalize()} instead", {"profile": args.profile, "positions": [pos],
                                                                 "what_if": [close]}, 0))
    header = f"{'':<24}{'qty':>12}{'margin':>14}{'liq. price':>18}{'bankr. price':>18}{'loss at liq.':>16}"
    print(f"{args.symbol} {args.side}, entry {args.entry}, profile {args.profile}")
    print(header)
    for label, doc, idx in rows:
        out = calculate(doc)
        report = out if idx < 0 else out["what_if"][idx]
        if not report["positions"]:
            print(f"{label:<24}{'(closed)':>12}")
            continue
        p = report["positions"][0]
        q = Decimal(p["qty"])
        lp, bp = p["liquidation_price"], p["bankruptcy_price"]
        loss = "-" if lp is None else f"{abs(Decimal(lp) - Decimal(p['entry_price'])) * q:.2f}"
        lp_s = "none" if lp is None else f"{Decimal(lp):.2f}"
        bp_s = "none" if bp is None else f"{Decimal(bp):.2f}"
        margin = Decimal(p["isolated_margin"])
        print(f"{label:<24}{q.normalize()!s:>12}{margin:>14.2f}{lp_s:>18}{bp_s:>18}{loss:>16}")
    return 0
