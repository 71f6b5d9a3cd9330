"""Margin arithmetic: maintenance and initial margin, PnL, liquidation and bankruptcy prices.

Pure integer functions shared by the engine and `exchange calc`. Units: a
quantity `q` (signed: long > 0, short < 0) in lots, a price in ticks, money
in atoms, with `k` atoms = 1 lot × 1 tick, so a notional is `|q| × price × k`.
A position's `cost` is its signed entry notional `q × EP × k` (money, exact),
so EP = cost / (q × k). Rates are ppm. Liquidation prices are exact
`Fraction`s of a tick; rounding to the grid is the caller's, and explicit.

mechanics.md Part 2 §3.1 (Binance USDⓈ-M):
    LP = (WB − TMM1 + UPNL1 + Σcum − Σ side×q×EP) / (Σ q×MMR − Σ side×q)
    BP = the same with MMR = 0 and cum = 0
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

from exchange.brackets import PPM, Bracket, BracketTable
from exchange.venue import MaintenanceBase


class Leg(NamedTuple):
    """One position (one-way, or one side of a hedge) of the symbol a liquidation price is for."""

    qty: int  # signed lots
    cost: int  # signed entry notional in atoms (q × EP × k)
    table: BracketTable


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def initial_margin(notional: int, leverage: int) -> int:
    """IM = notional / leverage, rounded up (owed)."""
    return ceil_div(notional, leverage)


def unrealized_pnl(qty: int, cost: int, mark: int, k: int) -> int:
    """UPNL = q × mark − q × EP, in atoms (exact)."""
    return qty * mark * k - cost


def maintenance_margin(qty: int, cost: int, mark: int, k: int, table: BracketTable, base: MaintenanceBase) -> int:
    """MM of one position: notional × MMR − cum, bracket by that notional; rounds up."""
    notional = abs(qty) * mark * k if base is MaintenanceBase.MARK_NOTIONAL else abs(cost)
    bracket = table.for_notional(notional)
    return ceil_div(notional * bracket.mmr, PPM) - bracket.cum


def _solve(legs: Sequence[Leg], brackets: Sequence[Bracket | None], wb: int, tmm: int, upnl: int, k: int,
           base: MaintenanceBase) -> Fraction | None:
    """LP for given brackets (None: MMR = cum = 0, i.e. the bankruptcy price)."""
    num = (wb - tmm + upnl) * PPM
    den = 0
    for leg, b in zip(legs, brackets, strict=True):
        num -= leg.cost * PPM
        den -= leg.qty * k * PPM
        if b is None:
            continue
        if base is MaintenanceBase.MARK_NOTIONAL:
            # MM charged at the LP notional: + cum on top, |q| × MMR × LP below
            num += b.cum * PPM
            den += abs(leg.qty) * k * b.mmr
        else:
            # MM charged on the entry notional: a constant, moved to the numerator
            num -= ceil_div(abs(leg.cost) * b.mmr, PPM) * PPM - b.cum * PPM
    if den == 0:
        return None
    return Fraction(num, den)


def liquidation_price(
    legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int, base: MaintenanceBase,
    mark: int | None = None,
) -> Fraction | None:
    """The mark price (in ticks, exact) at which MM = margin balance, or None if there is none (≤ 0).

    `wb` is the cross wallet (cross) or the isolated margin (isolated);
    `tmm_other`/`upnl_other` the maintenance margin and unrealised PnL of the
    account's other cross positions at their marks (0 when isolated). Each
    leg's bracket is the one at its notional at the LP itself (Binance:
    "substitute … the maintenance margin rate and amount at the liquidation
    price"), found by iterating from the bracket at `mark` (or at entry).
    """
    legs = [leg for leg in legs if leg.qty]
    if not legs:
        return None
    if base is MaintenanceBase.ENTRY_NOTIONAL:
        brackets = [leg.table.for_notional(abs(leg.cost)) for leg in legs]
        return _positive(_solve(legs, brackets, wb, tmm_other, upnl_other, k, base))
    brackets = [
        leg.table.for_notional(abs(leg.qty) * mark * k if mark else abs(leg.cost)) for leg in legs
    ]
    seen: set[tuple[int, ...]] = set()
    lp: Fraction | None = None
    while True:
        lp = _solve(legs, brackets, wb, tmm_other, upnl_other, k, base)
        if lp is None or lp <= 0:
            return None
        nxt = [leg.table.for_notional(_floor(abs(leg.qty) * lp * k)) for leg in legs]
        key = tuple(b.number for b in nxt)
        if nxt == brackets or key in seen:
            return lp
        seen.add(key)
        brackets = nxt


def bankruptcy_price(legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int) -> Fraction | None:
    """The mark price at which the margin balance is 0: the LP formula with MMR = 0 and cum = 0.

    Note: no cum in the numerator (one Binance-clone engine adds it; mechanics.md §3.1 says do not).
    """
    legs = [leg for leg in legs if leg.qty]
    if not legs:
        return None
    return _positive(_solve(legs, [None] * len(legs), wb, tmm_other, upnl_other, k, MaintenanceBase.MARK_NOTIONAL))


def _positive(x: Fraction | None) -> Fraction | None:
    return x if x is not None and x > 0 else None


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def lp_ticks_toward_mark(lp: Fraction | None, long: bool) -> int | None:
    """The LP on the tick grid for the risk index, rounded toward the mark so a check is early, never late.

    A long is at risk when the mark falls to its LP: round the LP up. A short: round down.
    """
    if lp is None:
        return None
    if long:
        return -((-lp.numerator) // lp.denominator)
    return lp.numerator // lp.denominator


def isolated_reduce(isolated_margin: int, qty: int, closed: int, realized_pnl: int) -> tuple[int, int, int]:
    """Close `closed` of `qty` (both > 0) of an isolated position: (margin left, to the wallet, shortfall).

    The isolated margin shrinks in proportion to the quantity closed (rounded
    up: what stays with the position is owed to it), and the wallet receives
    the released margin plus the realised PnL. A loss larger than the released
    margin is taken from the margin that stays, never from the wallet, so the
    position's loss is bounded by its margin and the liquidation price of the
    rest does not move (but for the bracket). A loss beyond the whole margin
    is the `shortfall`, for the insurance fund: nobody owes money.
    """
    left = ceil_div(isolated_margin * (qty - closed), qty) if closed < qty else 0
    to_wallet = isolated_margin - left + realized_pnl
    if to_wallet >= 0:
        return left, to_wallet, 0
    left += to_wallet
    if left >= 0:
        return left, 0, 0
    return 0, 0, -left


def realized_on_close(qty: int, cost: int, closed: int, price: int, k: int) -> tuple[int, int]:
    """Close `closed` lots (> 0, ≤ |qty|) of a position at `price`: (realised PnL, cost removed).

    The cost basis leaves in proportion (rounded toward zero, so the entry
    price of what stays moves by less than an atom per lot); the PnL is the
    exit notional minus exactly the cost removed, so no atom is created.
    """
    sign = 1 if qty > 0 else -1
    removed = cost if closed == abs(qty) else sign * (abs(cost) * closed // abs(qty))
    exit_value = sign * closed * price * k
    return exit_value - removed, removed
