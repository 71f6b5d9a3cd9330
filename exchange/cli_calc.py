"""`exchange calc`: the margin rules as a tool, without running an exchange.

Two forms. The JSON form (one document in, one out) is the contract of issue 3,
computed by `exchange.calculator.calculate`. The human form (`--entry ...`)
answers the seeds' decision question at a glance: for one position, what adding
X margin does against closing the same risk by a partial close, side by side.
It builds JSON documents and reads the calculator's reports, so every figure
comes from the engine's own functions (`exchange.margin`), like the JSON form's.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from exchange.calculator import KNOWN_SYMBOLS, CalcError, calculate, calculate_with_realized
from exchange.instrument import default_instruments
from exchange.venue import PROFILES, profile

EXAMPLE_IN = {
    "profile": "binance",
    "positions": [{"symbol": "BTCUSDT", "side": "long", "qty": "0.125", "entry_price": "80000",
                   "margin_mode": "isolated", "isolated_margin": "1000"}],
    "what_if": [{"add_margin": {"symbol": "BTCUSDT", "side": "long", "amount": "500"}},
                {"mark": {"symbol": "BTCUSDT", "price": "70000"}}],
}

#: The seed example of the help, and what it prints (tests/test_calc_human.py checks that they agree).
SEED_ARGS = "--entry 80000 --side long --leverage 10 --margin 1000 --add-margin 500 --mark 76000"
SEED_OUTPUT = """\
BTCUSDT long 0.125 at 80000, 10x, isolated margin 1000, mark 76000, profile binance
                                   as is    add 500 margin       close 0.065
position qty                       0.125             0.125             0.060
isolated margin                  1000.00           1500.00            480.00
liquidation price               72289.16          68273.09          72289.16
bankruptcy price                72000.00          68000.00          72000.00
distance to liq.         3710.84 (4.88%)  7726.91 (10.17%)   3710.84 (4.88%)
margin ratio                       7.60%             3.80%             7.60%
maintenance margin                 38.00             38.00             18.24
unrealised PnL                   -500.00           -500.00           -240.00
realised PnL                        0.00              0.00           -260.00
wallet change                       0.00           -500.00           +260.00
PnL if mark hits liq.            -963.86          -1465.86           -722.65
status at mark                        ok                ok                ok
close 0.065: the quantity whose initial margin at the mark is 500 (500 x 10 / 76000 =
  0.0657894..., rounded down to the lot 0.001), closed at the mark 76000."""

def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line if line else line for line in text.splitlines())


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

Human form (--entry ...): one position, and side by side what adding margin does
against what a partial close does. Columns:
  as is            the position as given, at the mark (--mark; default: the entry).
  add X margin     --add-margin X: isolated, X moves from the wallet into the
                   position's isolated margin; cross, X is transferred into the
                   futures (cross) wallet.
  close Q          a partial close of Q at the mark, "closing the same risk":
                   Q = --close if given, else the quantity whose initial margin
                   at the mark equals X: Q = X x leverage / mark, rounded down to
                   the symbol's lot (0.001 for BTCUSDT/ETHUSDT) and capped at the
                   position. Leverage: --leverage, else entry x qty / --margin.
                   The close realises its PnL (a loss too) at the mark. Isolated:
                   the margin shrinks in proportion and the released margin plus
                   the realised PnL goes to the wallet, so the liquidation price
                   of the rest stays (but for the bracket). Cross: the realised
                   PnL changes the wallet that backs the rest, so the
                   liquidation price moves.
Rows: position qty (what is left after the close); isolated margin (isolated) or wallet (cross); liquidation and
bankruptcy price; distance to liq. = mark - liq. price for a long, liq. price -
mark for a short, also in % of the mark (negative: beyond it); margin ratio =
maintenance margin / margin balance (of the position when isolated, of the
account when cross); maintenance margin and unrealised PnL at the mark; realised
PnL of the close; the wallet after (with --wallet) or its change (without);
PnL if mark hits liq. = realised + unrealised PnL with the mark at the
liquidation price; status at mark: ok, margin call (ratio >= 80%) or
liquidation (ratio >= 100%). Money and prices are rounded to 2 decimals (more
for prices given with more); the JSON form gives them exact.

Examples:
  exchange calc {SEED_ARGS}
  prints (mechanics.md §8a, Binance default: liq. 72289.16 as is, 68273.09 after +500, the seed's
  "about 72,400 / 68,400"; the partial close leaves the liquidation price where it was):
{_indent(SEED_OUTPUT)}

  exchange calc --entry 80000 --leverage 10 --margin 1000 --add-margin 500 --mark 76000 \\
      --margin-mode cross --wallet 1000
      the same position in cross margin with a 1,000 USDT wallet: adding 500 gives
      68273.09 again, but the partial close of 0.065 moves the liquidation price
      to 67938.42 (its 260 USDT loss leaves a 740 wallet behind 0.06 BTC).

  exchange calc --entry 80000 --leverage 10 --margin 1000 --close 0.05 --mark 74000
      a given partial close (0.05) at 74,000, without an add-margin column.

  exchange calc --entry 80000 --leverage 10 --margin 1000 --add-margin 500 \\
      --profile entry-notional --mmr 0.005 --cum 0
      the seed's own figures (mechanics.md §8a): 72400.00, then 68400.00 after +500.

Exit status: 0 ok, 2 bad input (the message names the field or the option)."""

LOTS = {ins.symbol: Decimal(ins.step_size) for ins in default_instruments()}
#: Beyond these the human form stops: the calculator's exact integers would grow without need.
MAX_PLACES = 12
#: The human form's lines fit in this many columns.
WIDTH = 98
MAX_ABS = Decimal("1e15")

#: The JSON fields the human form fills, by the option they come from (to name the option in a message).
FIELD_OPTIONS = [
    ("what_if[0].add_margin.amount", "--add-margin"), ("what_if[0].close.qty", "--close"),
    ("positions[0].isolated_margin", "--margin"), ("positions[0].entry_price", "--entry"),
    ("positions[0].mark_price", "--mark"), ("positions[0].leverage", "--leverage"),
    ("positions[0].qty", "--qty"), ("positions[0].mmr", "--mmr"), ("positions[0].cum", "--cum"),
    ("positions[0].symbol", "--symbol"), ("wallet_balance", "--wallet"), ("profile", "--profile"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calc", help="margin calculator: liquidation price, margin ratio, what-if",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="JSON input file (default: standard input)")
    h = p.add_argument_group("human form (one position; --entry selects it)")
    h.add_argument("--entry", metavar="PRICE", help="entry price")
    h.add_argument("--side", choices=["long", "short"], default="long", help="position side (default long)")
    h.add_argument("--leverage", metavar="L", help="leverage (qty = margin x leverage / entry unless --qty)")
    h.add_argument("--margin", metavar="USDT", help="isolated margin (cross: with --leverage, sizes the position)")
    h.add_argument("--qty", metavar="QTY", help="quantity in base units (default: margin x leverage / entry, "
                   "rounded down to the lot)")
    h.add_argument("--mark", metavar="PRICE", help="mark price (default: the entry)")
    h.add_argument("--add-margin", metavar="X", help="margin to add, compared with a partial close")
    h.add_argument("--close", metavar="QTY", help="quantity of the partial close (default: the quantity whose "
                   "initial margin at the mark is X)")
    h.add_argument("--margin-mode", choices=["isolated", "cross"], default="isolated",
                   help="isolated (default) or cross (needs --wallet)")
    h.add_argument("--wallet", metavar="USDT", help="futures wallet balance (cross: the margin; isolated: "
                   "optional, shows the wallet left instead of its change)")
    h.add_argument("--symbol", default="BTCUSDT", help="symbol (default BTCUSDT; another needs --mmr and --cum)")
    h.add_argument("--mmr", metavar="RATE", help="a fixed maintenance margin rate instead of the bracket table")
    h.add_argument("--cum", metavar="USDT", help="the fixed bracket's maintenance amount (with --mmr)")
    h.add_argument("--profile", choices=sorted(PROFILES), default="binance",
                   help="venue profile: binance (default) or entry-notional")

    def error(message: str) -> NoReturn:  # one line, exit 2, like every other bad input of `calc`
        print(f"exchange calc: {message} (see exchange calc --help)", file=sys.stderr)
        sys.exit(2)

    p.error = error  # type: ignore[method-assign]
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.entry is not None:
            return _human(args)
        human = [o for o in ("leverage", "margin", "qty", "mark", "add_margin", "close", "wallet", "mmr", "cum")
                 if getattr(args, o) is not None]
        if human:
            raise CalcError(f"--{human[0].replace('_', '-')}: a human-form option; give --entry too")
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


# ---------------------------------------------------------------------------- human form: inputs
def _num(value: str | None, option: str, *, positive: bool = False, nonneg: bool = False) -> Decimal | None:
    """A human-form option as a finite Decimal, or CalcError naming the option."""
    if value is None:
        return None
    try:
        d = Decimal(value.strip().replace("_", ""))
    except InvalidOperation:
        raise CalcError(f"{option}: not a number: {value!r}") from None
    if not d.is_finite():
        raise CalcError(f"{option}: not a finite number: {value!r}")
    if positive and d <= 0:
        raise CalcError(f"{option}: must be positive, got {value}")
    if nonneg and d < 0:
        raise CalcError(f"{option}: must not be negative, got {value}")
    if abs(d) >= MAX_ABS:
        raise CalcError(f"{option}: out of range (at most {MAX_ABS:f}): {value}")
    exp = d.normalize().as_tuple().exponent
    if isinstance(exp, int) and -exp > MAX_PLACES:
        raise CalcError(f"{option}: at most {MAX_PLACES} decimal places: {value}")
    return d.normalize() if d else Decimal(0)


def _s(d: Decimal) -> str:
    return f"{d.normalize():f}"


@dataclass
class _Inputs:
    symbol: str
    side: str
    cross: bool
    entry: Decimal
    mark: Decimal
    qty: Decimal
    qty_rounded: bool  # qty derived from margin x leverage / entry and rounded down to the lot
    margin: Decimal | None  # isolated margin (None in cross)
    leverage: Decimal | None
    wallet: Decimal | None
    add: Decimal | None
    close: Decimal | None
    close_default: bool
    close_exact: Decimal | None  # X x leverage / mark before rounding (default close only)
    lot: Decimal
    bracket: dict[str, str]  # {"mmr", "cum"} when fixed


def _inputs(args: argparse.Namespace) -> _Inputs:
    entry = _num(args.entry, "--entry", positive=True)
    lev = _num(args.leverage, "--leverage", positive=True)
    margin = _num(args.margin, "--margin", positive=True)
    qty = _num(args.qty, "--qty", positive=True)
    mark = _num(args.mark, "--mark", positive=True)
    add = _num(args.add_margin, "--add-margin", positive=True)
    close = _num(args.close, "--close", positive=True)
    wallet = _num(args.wallet, "--wallet", nonneg=args.margin_mode != "cross")  # a cross wallet may owe
    mmr = _num(args.mmr, "--mmr", nonneg=True)
    cum = _num(args.cum, "--cum", nonneg=True)
    assert entry is not None
    cross = args.margin_mode == "cross"
    symbol = args.symbol.strip()
    if not symbol:
        raise CalcError("--symbol: must not be empty")
    if (mmr is None) != (cum is None):
        raise CalcError(f"{'--cum' if mmr is not None else '--mmr'}: give --mmr and --cum together")
    if mmr is not None and mmr >= 1:
        raise CalcError(f"--mmr: a rate below 1 (0.004 is 0.4%), got {args.mmr}")
    if mmr is not None and mmr * 1_000_000 != (mmr * 1_000_000).to_integral_value():
        raise CalcError(f"--mmr: at most 6 decimal places (1 ppm), got {args.mmr}")
    if mmr is None and symbol not in KNOWN_SYMBOLS:
        raise CalcError(f"--symbol: {symbol} has no bracket table here; give --mmr and --cum")
    if cross and wallet is None:
        raise CalcError("--wallet: required with --margin-mode cross (the cross wallet backs the position)")
    lot = LOTS.get(symbol, Decimal("0.00000001"))
    qty_rounded = False
    if qty is None:
        if margin is None or lev is None:
            need = "--margin and --leverage" if margin is None and lev is None else \
                "--margin" if margin is None else "--leverage"
            raise CalcError(f"{need}: required with --entry unless --qty gives the quantity")
        exact = margin * lev / entry
        qty = exact.quantize(lot, rounding=ROUND_DOWN)
        qty_rounded = qty != exact
        if qty <= 0:
            raise CalcError(f"--margin: {_s(margin)} x {_s(lev)} / {_s(entry)} is less than one lot ({_s(lot)})")
    if not cross and margin is None:
        if lev is None:
            raise CalcError("--margin: required for an isolated position (or give --leverage for the initial "
                            "margin)")
        # the initial margin, rounded up to 1e-8 (owed, like exchange.margin.initial_margin)
        margin = (qty * entry / lev).quantize(Decimal("1e-8"), rounding=ROUND_CEILING).normalize()
    margin_iso = None if cross else margin
    if wallet is not None and add is not None and not cross and add > wallet:
        raise CalcError(f"--add-margin: {_s(add)} is more than the wallet balance (--wallet {_s(wallet)})")
    mark = mark if mark is not None else entry
    close_default = False
    close_exact = None
    if close is not None:
        if close > qty:
            raise CalcError(f"--close: {_s(close)} is more than the position's quantity {_s(qty)}")
    elif add is not None:
        eff = lev if lev is not None else (entry * qty / margin if margin else None)
        if eff is None:
            raise CalcError("--close: give --close QTY, or --leverage for the default (X x leverage / mark)")
        close_exact = add * eff / mark
        close = min(qty, close_exact.quantize(lot, rounding=ROUND_DOWN))
        close_default = True
        if close <= 0:
            raise CalcError(f"--add-margin: {_s(add)} x leverage / mark is less than one lot ({_s(lot)}); "
                            "give --close QTY")
    bracket = {} if mmr is None else {"mmr": _s(mmr), "cum": _s(cum or Decimal(0))}
    return _Inputs(symbol, args.side, cross, entry, mark, qty, qty_rounded, margin_iso, lev, wallet, add, close,
                   close_default, close_exact, lot, bracket)


# ---------------------------------------------------------------------------- human form: the table
@dataclass
class _Column:
    title: str
    report: dict[str, Any]  # a calculator report (the document after its steps)
    realized: Decimal
    wallet_start: Decimal  # the wallet the document started with (to show a change)


def _docs(inp: _Inputs, prof: str) -> list[tuple[str, dict[str, Any], Decimal]]:
    """(title, calculator document, wallet it starts with) per column; the report wanted is the last."""
    pos: dict[str, Any] = {"symbol": inp.symbol, "side": inp.side, "qty": _s(inp.qty), "entry_price": _s(inp.entry),
                           "mark_price": _s(inp.mark), "margin_mode": "cross" if inp.cross else "isolated",
                           **inp.bracket}
    if inp.margin is not None:
        pos["isolated_margin"] = _s(inp.margin)
    # Isolated without --wallet: start the wallet at X so that adding X is allowed; the table shows changes.
    wallet = inp.wallet if inp.wallet is not None else (inp.add or Decimal(0))
    base = {"profile": prof, "position_mode": "one-way", "wallet_balance": _s(wallet), "positions": [pos]}
    cols = [("as is", base, wallet)]
    if inp.add is not None:
        if inp.cross:  # cross: the margin is the wallet; adding X is a transfer into it
            added = {**base, "wallet_balance": _s(wallet + inp.add)}
            cols.append((f"add {_s(inp.add)} margin", added, wallet))
        else:
            step = {"add_margin": {"symbol": inp.symbol, "side": inp.side, "amount": _s(inp.add)}}
            cols.append((f"add {_s(inp.add)} margin", {**base, "what_if": [step]}, wallet))
    if inp.close is not None:
        step = {"close": {"symbol": inp.symbol, "side": inp.side, "qty": _s(inp.close)}}
        cols.append((f"close {_s(inp.close)}", {**base, "what_if": [step]}, wallet))
    return cols


def _money(x: Decimal | Fraction | str, sign: bool = False) -> str:
    d = Decimal(x) if not isinstance(x, Fraction) else Decimal(x.numerator) / Decimal(x.denominator)
    return f"{d:+.2f}" if sign and d != 0 else f"{d:.2f}"


def _table(inp: _Inputs, prof_name: str, columns: list[_Column]) -> list[str]:
    long = inp.side == "long"
    places = max(2, *(-e for e in (inp.entry.as_tuple().exponent, inp.mark.as_tuple().exponent)
                      if isinstance(e, int)))
    call_ratio = Fraction(profile(prof_name).margin_call_ratio_ppm, 1_000_000)

    def price(s: str | None) -> str:
        return "none" if s is None else f"{Decimal(s):.{places}f}"

    margin_label = "wallet (cross margin)" if inp.cross else "isolated margin"
    wallet_label = "wallet" if inp.wallet is not None else "wallet change"
    qty_places = max(3, -int(inp.lot.as_tuple().exponent))

    def cells(col: _Column) -> dict[str, str]:
        rep = col.report
        wallet = Decimal(rep["wallet_balance"])
        common = {"realised PnL": _money(col.realized),
                  wallet_label: _money(wallet) if inp.wallet is not None else _money(wallet - col.wallet_start, True)}
        if not rep["positions"]:  # closed in full
            return {"position qty": "(closed)", **common, "PnL if mark hits liq.": _money(col.realized),
                    "status at mark": "closed"}
        p = rep["positions"][0]
        q, ep, mark = Decimal(p["qty"]), Decimal(p["entry_price"]), Decimal(p["mark_price"])
        lp = None if p["liquidation_price"] is None else Decimal(p["liquidation_price"])
        dist = None if lp is None else (mark - lp if long else lp - mark)
        ratio_s = rep["margin_ratio"] if inp.cross else p.get("margin_ratio")
        ratio = None if ratio_s is None else Fraction(Decimal(ratio_s))
        status = ("liquidation" if ratio is None or ratio >= 1 else "margin call" if ratio >= call_ratio else "ok")
        return {
            "position qty": f"{q:.{qty_places}f}" if qty_places <= 8 else _s(q),
            margin_label: _money(wallet if inp.cross else p["isolated_margin"]),
            "liquidation price": price(p["liquidation_price"]),
            "bankruptcy price": price(p["bankruptcy_price"]),
            "distance to liq.": "none" if dist is None else f"{dist:.{places}f} ({dist / mark * 100:.2f}%)",
            "margin ratio": "n/a (balance <= 0)" if ratio_s is None else f"{Decimal(ratio_s) * 100:.2f}%",
            "maintenance margin": _money(p["maintenance_margin"]),
            "unrealised PnL": _money(p["unrealized_pnl"]),
            **common,
            # realised + unrealised PnL with the mark at the liquidation price
            "PnL if mark hits liq.": "none" if lp is None else
            _money(col.realized + (lp - ep) * q * (1 if long else -1)),
            "status at mark": status,
        }

    labels = ["position qty", margin_label, "liquidation price", "bankruptcy price", "distance to liq.",
              "margin ratio", "maintenance margin", "unrealised PnL", "realised PnL", wallet_label,
              "PnL if mark hits liq.", "status at mark"]
    per_column = [cells(col) for col in columns]
    rows = {label: [c.get(label, "-") for c in per_column] for label in labels}

    width = max(16, *(len(c) + 2 for cells in rows.values() for c in cells), *(len(c.title) + 2 for c in columns))
    label_w = 22
    head = f"{inp.symbol} {inp.side} {_s(inp.qty)} at {_s(inp.entry)}"
    if inp.leverage is not None:
        head += f", {_s(inp.leverage)}x"
    head += f", isolated margin {_s(inp.margin)}" if inp.margin is not None else f", cross, wallet {_s(inp.wallet)}"
    head += f", mark {_s(inp.mark)}, profile {prof_name}"
    if inp.bracket:
        head += f", MMR {_s(Decimal(inp.bracket['mmr']))} cum {inp.bracket['cum']}"
    out = [*textwrap.wrap(head, WIDTH, subsequent_indent="  "),
           " " * label_w + "".join(f"{c.title:>{width}}" for c in columns)]
    out += [f"{label:<{label_w}}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows.items()]
    notes = []
    if inp.qty_rounded:
        notes.append(f"position qty: margin x leverage / entry, rounded down to the lot {_s(inp.lot)}.")
    if inp.add is not None and inp.cross:
        notes.append(f"add {_s(inp.add)} margin: cross, so {_s(inp.add)} is transferred into the futures wallet.")
    if inp.close is not None:
        if inp.close_default:
            assert inp.add is not None and inp.close_exact is not None
            lev = inp.leverage if inp.leverage is not None else inp.entry * inp.qty / (inp.margin or 1)
            exact = inp.close_exact.quantize(Decimal("1e-7"), rounding=ROUND_DOWN)
            dots = "..." if exact != inp.close_exact else ""
            notes.append(f"close {_s(inp.close)}: the quantity whose initial margin at the mark is {_s(inp.add)} "
                         f"({_s(inp.add)} x {_s(lev.quantize(Decimal('1e-4')))} / {_s(inp.mark)} = {_s(exact)}{dots}"
                         + (f", rounded down to the lot {_s(inp.lot)})" if inp.close < inp.qty else
                            ", more than the position: all of it)")
                         + f", closed at the mark {_s(inp.mark)}.")
        else:
            notes.append(f"close {_s(inp.close)}: given by --close, closed at the mark {_s(inp.mark)}.")
    for note in notes:
        out += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
    return out


def _option_error(e: CalcError) -> CalcError:
    """A calculator error about a field the human form filled, told by the option it came from."""
    msg = str(e)
    for field, option in FIELD_OPTIONS:
        if msg.startswith(field):
            return CalcError(option + msg[len(field):])
    return e


def _human(args: argparse.Namespace) -> int:
    if args.file is not None:
        raise CalcError(f"{args.file}: the human form (--entry) reads no JSON file")
    inp = _inputs(args)
    columns = []
    for title, doc, wallet in _docs(inp, args.profile):
        try:
            reports = calculate_with_realized(doc)
        except CalcError as e:
            raise _option_error(e) from None
        rep, realized = reports[-1]
        columns.append(_Column(title, rep, Decimal(realized), wallet))
    print("\n".join(_table(inp, args.profile, columns)))
    return 0
