"""The margin calculator: an account as JSON in, its margin figures as JSON out.

The same functions as the engine (`exchange.margin`) compute every figure;
this module only converts decimals to exact integers at a scale fine enough
for every input, and back. Input and output are described in `--help` of
`exchange calc` (exchange/cli_calc.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from exchange.brackets import PPM, BracketTable, default_table, fixed_table
from exchange.margin import (
    Leg,
    bankruptcy_price,
    isolated_reduce,
    liquidation_price,
    maintenance_margin,
    realized_on_close,
    unrealized_pnl,
)
from exchange.units import parse_decimal
from exchange.venue import VenueProfile, profile

KNOWN_SYMBOLS = ("BTCUSDT", "ETHUSDT")


class CalcError(ValueError):
    """Bad input: the message names the field."""


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CalcError(f"{where}: expected a number or a decimal string, got {value!r}")
    if isinstance(value, float):
        value = repr(value)  # JSON numbers arrive as floats: take their shortest decimal form
    try:
        return parse_decimal(value, where)
    except ValueError as e:
        raise CalcError(str(e)) from None


def _places(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return max(-exp, 0) if isinstance(exp, int) else 0


@dataclass
class _Pos:
    symbol: str
    long: bool
    qty: int  # signed, in qty units
    cost: int  # signed money units
    mark: int  # price units
    isolated: bool
    isolated_margin: int
    table: BracketTable
    where: str


@dataclass
class _Scale:
    """Units: qty 10^-dq, price 10^-dp, money 10^-dm, with k = 10^(dm-dq-dp) money units per qty×price unit."""

    dq: int
    dp: int
    dm: int

    @property
    def k(self) -> int:
        return 10 ** (self.dm - self.dq - self.dp)

    def qty(self, d: Decimal) -> int:
        return int(d.scaleb(self.dq))

    def price(self, d: Decimal) -> int:
        return int(d.scaleb(self.dp))

    def money(self, d: Decimal) -> int:
        return int(d.scaleb(self.dm))


@dataclass
class _Account:
    prof: VenueProfile
    hedge: bool
    wallet: int
    wallet_given: bool
    positions: list[_Pos] = field(default_factory=list)
    realized_pnl: int = 0  # PnL realised by `close` steps so far (for the human form; not in the JSON)


def _fmt(x: Fraction | int, scale_exp: int) -> str:
    """A number in units of 10^-scale_exp as a decimal string with at least 8 significant digits."""
    value = Fraction(x) / (10**scale_exp)
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(value.numerator) / Decimal(value.denominator)
        if d == 0:
            return "0." + "0" * 8
        places = max(8, 8 - d.adjusted() - 1)
        return str(d.quantize(Decimal(1).scaleb(-places)))


def parse(doc: Any) -> tuple[_Account, _Scale, list[dict[str, Any]]]:
    if not isinstance(doc, dict):
        raise CalcError("input: expected a JSON object")
    try:
        prof = profile(doc.get("profile", "binance"))
    except ValueError as e:
        raise CalcError(f"profile: {e}") from None
    mode = doc.get("position_mode", "one-way")
    if mode not in ("one-way", "hedge"):
        raise CalcError(f"position_mode: expected 'one-way' or 'hedge', got {mode!r}")
    raw = doc.get("positions")
    if not isinstance(raw, list) or not raw:
        raise CalcError("positions: expected a non-empty list")
    steps = doc.get("what_if", [])
    if not isinstance(steps, list):
        raise CalcError("what_if: expected a list")

    # First pass: decimals, to choose a scale at which every input is an exact integer.
    qtys, prices, moneys = [], [], []
    if "wallet_balance" in doc:
        moneys.append(_dec(doc["wallet_balance"], "wallet_balance"))
    for i, p in enumerate(raw):
        w = f"positions[{i}]"
        if not isinstance(p, dict):
            raise CalcError(f"{w}: expected an object")
        for key in ("symbol", "side", "qty", "entry_price"):
            if key not in p:
                raise CalcError(f"{w}.{key}: required")
        qtys.append(_dec(p["qty"], f"{w}.qty"))
        prices.append(_dec(p["entry_price"], f"{w}.entry_price"))
        if "mark_price" in p:
            prices.append(_dec(p["mark_price"], f"{w}.mark_price"))
        for key in ("isolated_margin", "cum"):
            if key in p:
                moneys.append(_dec(p[key], f"{w}.{key}"))
    for j, s in enumerate(steps):
        w = f"what_if[{j}]"
        if not isinstance(s, dict) or len(s) != 1:
            raise CalcError(f"{w}: expected an object with one key: add_margin, close or mark")
        ((kind, body),) = s.items()
        if not isinstance(body, dict):
            raise CalcError(f"{w}.{kind}: expected an object")
        if kind == "add_margin":
            moneys.append(_dec(body.get("amount"), f"{w}.add_margin.amount"))
        elif kind == "close":
            qtys.append(_dec(body.get("qty"), f"{w}.close.qty"))
        elif kind == "mark":
            prices.append(_dec(body.get("price"), f"{w}.mark.price"))
        else:
            raise CalcError(f"{w}: unknown step {kind!r}; expected add_margin, close or mark")
    dq = max(map(_places, qtys), default=0)
    dp = max(map(_places, prices), default=0)
    dm = max([8, dq + dp, *map(_places, moneys)])
    sc = _Scale(dq, dp, dm)

    wallet_given = "wallet_balance" in doc
    acct = _Account(prof, mode == "hedge", sc.money(_dec(doc.get("wallet_balance", 0), "wallet_balance")), wallet_given)
    atom = Decimal(1).scaleb(-dm)
    for i, p in enumerate(raw):
        w = f"positions[{i}]"
        symbol = p["symbol"]
        if not isinstance(symbol, str):
            raise CalcError(f"{w}.symbol: expected a string")
        side = p["side"]
        if side not in ("long", "short"):
            raise CalcError(f"{w}.side: expected 'long' or 'short', got {side!r}")
        qty = sc.qty(_dec(p["qty"], f"{w}.qty"))
        if qty <= 0:
            raise CalcError(f"{w}.qty: must be positive")
        ep = sc.price(_dec(p["entry_price"], f"{w}.entry_price"))
        if ep <= 0:
            raise CalcError(f"{w}.entry_price: must be positive")
        mark = sc.price(_dec(p["mark_price"], f"{w}.mark_price")) if "mark_price" in p else ep
        if mark <= 0:
            raise CalcError(f"{w}.mark_price: must be positive")
        if ("mmr" in p) != ("cum" in p):
            raise CalcError(f"{w}.{'cum' if 'mmr' in p else 'mmr'}: give mmr and cum together")
        if "mmr" in p:
            try:
                table = fixed_table(str(_dec(p["mmr"], f"{w}.mmr")), str(_dec(p["cum"], f"{w}.cum")), atom=atom)
            except ValueError as e:
                raise CalcError(f"{w}.mmr: {e}") from None
        elif symbol in KNOWN_SYMBOLS:
            table = default_table(symbol, atom)
        else:
            raise CalcError(f"{w}.mmr: required (with cum) for a symbol the emulator does not know: {symbol}")
        margin_mode = p.get("margin_mode", "cross")
        if margin_mode not in ("cross", "isolated"):
            raise CalcError(f"{w}.margin_mode: expected 'cross' or 'isolated', got {margin_mode!r}")
        signed = qty if side == "long" else -qty
        cost = signed * ep * sc.k
        iso = 0
        if margin_mode == "isolated":
            if "isolated_margin" in p:
                iso = sc.money(_dec(p["isolated_margin"], f"{w}.isolated_margin"))
            elif "leverage" in p:
                lev = _dec(p["leverage"], f"{w}.leverage")
                if lev <= 0:
                    raise CalcError(f"{w}.leverage: must be positive")
                iso = int(Fraction(abs(cost)) / Fraction(lev))
            else:
                raise CalcError(f"{w}.isolated_margin: required for an isolated position (or give leverage)")
            if iso < 0:
                raise CalcError(f"{w}.isolated_margin: must not be negative")
        elif not wallet_given:
            raise CalcError("wallet_balance: required when a position is cross")
        if any(q.symbol == symbol and q.long == (side == "long") for q in acct.positions):
            raise CalcError(f"{w}: a second {side} position in {symbol}")
        if not acct.hedge and any(q.symbol == symbol for q in acct.positions):
            raise CalcError(f"{w}: one-way mode holds one position per symbol (use position_mode 'hedge')")
        acct.positions.append(_Pos(symbol, side == "long", signed, cost, mark, margin_mode == "isolated", iso,
                                   table, w))
    return acct, sc, steps


def _mm(p: _Pos, acct: _Account, sc: _Scale) -> int:
    return maintenance_margin(p.qty, p.cost, p.mark, sc.k, p.table, acct.prof.maintenance_base)


def _legs_and_others(p: _Pos, acct: _Account, sc: _Scale) -> tuple[list[Leg], int, int, int]:
    """What the LP formula needs for `p`: its legs, wallet, and the other positions' MM and UPNL."""
    if p.isolated:
        return [Leg(p.qty, p.cost, p.table)], p.isolated_margin, 0, 0
    legs = [Leg(q.qty, q.cost, q.table) for q in acct.positions if not q.isolated and q.symbol == p.symbol]
    others = [q for q in acct.positions if not q.isolated and q.symbol != p.symbol]
    tmm = sum(_mm(q, acct, sc) for q in others)
    upnl = sum(unrealized_pnl(q.qty, q.cost, q.mark, sc.k) for q in others)
    return legs, acct.wallet, tmm, upnl


def report(acct: _Account, sc: _Scale) -> dict[str, Any]:
    money = sc.dm
    cross = [p for p in acct.positions if not p.isolated]
    mb = acct.wallet + sum(unrealized_pnl(p.qty, p.cost, p.mark, sc.k) for p in cross)
    mm_total = sum(_mm(p, acct, sc) for p in cross)
    out_positions = []
    for p in acct.positions:
        legs, wb, tmm, upnl = _legs_and_others(p, acct, sc)
        lp = liquidation_price(legs, wb, tmm, upnl, sc.k, acct.prof.maintenance_base, p.mark)
        bp = bankruptcy_price(legs, wb, tmm, upnl, sc.k)
        notional = abs(p.qty) * p.mark * sc.k
        bracket = p.table.for_notional(notional if acct.prof.maintenance_base == "MARK_NOTIONAL" else abs(p.cost))
        pos_mm = _mm(p, acct, sc)
        pos_upnl = unrealized_pnl(p.qty, p.cost, p.mark, sc.k)
        row: dict[str, Any] = {
            "symbol": p.symbol,
            "side": "long" if p.long else "short",
            "margin_mode": "isolated" if p.isolated else "cross",
            "qty": _fmt(abs(p.qty), sc.dq),
            "entry_price": _fmt(Fraction(abs(p.cost), abs(p.qty) * sc.k), sc.dp),
            "mark_price": _fmt(p.mark, sc.dp),
            "liquidation_price": None if lp is None else _fmt(lp, sc.dp),
            "bankruptcy_price": None if bp is None else _fmt(bp, sc.dp),
            "maintenance_margin": _fmt(pos_mm, money),
            "unrealized_pnl": _fmt(pos_upnl, money),
            "mmr": _fmt(Fraction(bracket.mmr, PPM), 0),
            "cum": _fmt(bracket.cum, money),
        }
        if p.isolated:
            row["isolated_margin"] = _fmt(p.isolated_margin, money)
            balance = p.isolated_margin + pos_upnl
            row["margin_ratio"] = _fmt(Fraction(pos_mm, balance), 0) if balance > 0 else None
        out_positions.append(row)
    return {
        "wallet_balance": _fmt(acct.wallet, money),
        "margin_balance": _fmt(mb, money),
        "maintenance_margin": _fmt(mm_total, money),
        "margin_ratio": (_fmt(Fraction(mm_total, mb), 0) if mb > 0 else None) if cross else _fmt(0, 0),
        "positions": out_positions,
    }


def _find(acct: _Account, body: dict[str, Any], where: str) -> _Pos:
    symbol, side = body.get("symbol"), body.get("side")
    if side is None and not acct.hedge:
        matches = [p for p in acct.positions if p.symbol == symbol]
    else:
        if side not in ("long", "short"):
            raise CalcError(f"{where}.side: expected 'long' or 'short', got {side!r}")
        matches = [p for p in acct.positions if p.symbol == symbol and p.long == (side == "long")]
    if not matches:
        raise CalcError(f"{where}: no {side or ''} position in {symbol!r}".replace("  ", " "))
    return matches[0]


def apply_step(acct: _Account, sc: _Scale, step: dict[str, Any], where: str) -> None:
    ((kind, body),) = step.items()
    if kind == "mark":
        price = sc.price(_dec(body.get("price"), f"{where}.mark.price"))
        if price <= 0:
            raise CalcError(f"{where}.mark.price: must be positive")
        hits = [p for p in acct.positions if p.symbol == body.get("symbol")]
        if not hits:
            raise CalcError(f"{where}.mark.symbol: no position in {body.get('symbol')!r}")
        for p in hits:
            p.mark = price
    elif kind == "add_margin":
        p = _find(acct, body, f"{where}.add_margin")
        amount = sc.money(_dec(body.get("amount"), f"{where}.add_margin.amount"))
        if not p.isolated:
            raise CalcError(f"{where}.add_margin: margin can be added only to an isolated position")
        if acct.wallet_given:
            if amount > acct.wallet:
                raise CalcError(f"{where}.add_margin.amount: more than the wallet balance")
            acct.wallet -= amount
        p.isolated_margin += amount
        if p.isolated_margin < 0:
            raise CalcError(f"{where}.add_margin.amount: would leave the isolated margin negative")
    elif kind == "close":
        p = _find(acct, body, f"{where}.close")
        closed = sc.qty(_dec(body.get("qty"), f"{where}.close.qty"))
        if not 0 < closed <= abs(p.qty):
            raise CalcError(f"{where}.close.qty: must be positive and at most the position's quantity")
        pnl, removed = realized_on_close(p.qty, p.cost, closed, p.mark, sc.k)
        acct.realized_pnl += pnl
        if p.isolated:
            p.isolated_margin, to_wallet, _ = isolated_reduce(p.isolated_margin, abs(p.qty), closed, pnl)
            acct.wallet += to_wallet
        else:
            acct.wallet += pnl
        p.qty += -closed if p.qty > 0 else closed
        p.cost -= removed
        if p.qty == 0:
            acct.positions.remove(p)


def calculate(doc: Any) -> dict[str, Any]:
    """The calculator's whole job: parse, report, apply each what-if step and report again."""
    acct, sc, steps = parse(doc)
    out = report(acct, sc)
    after = []
    for j, step in enumerate(steps):
        apply_step(acct, sc, step, f"what_if[{j}]")
        after.append(report(acct, sc))
    out["what_if"] = after
    return out


def calculate_with_realized(doc: Any) -> list[tuple[dict[str, Any], str]]:
    """For the human form: the reports of `calculate` (as given, then after each what-if step), each with
    the PnL realised so far by `close` steps (at the mark, as a decimal string). The JSON output is
    `calculate`'s alone; this adds nothing to it."""
    acct, sc, steps = parse(doc)
    out = [(report(acct, sc), _fmt(acct.realized_pnl, sc.dm))]
    for j, step in enumerate(steps):
        apply_step(acct, sc, step, f"what_if[{j}]")
        out.append((report(acct, sc), _fmt(acct.realized_pnl, sc.dm)))
    return out
