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

# Bound once: reading a member through the enum class costs a descriptor call each time (CPython 3.11).
_MARK_NOTIONAL = MaintenanceBase.MARK_NOTIONAL
_ENTRY_NOTIONAL = MaintenanceBase.ENTRY_NOTIONAL


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
    notional = abs(qty) * mark * k if base is _MARK_NOTIONAL else abs(cost)
    bracket = table.for_notional(notional)
    return ceil_div(notional * bracket.mmr, PPM) - bracket.cum


def _solve(legs: Sequence[Leg], brackets: Sequence[Bracket | None], wb: int, tmm: int, upnl: int, k: int,
           base: MaintenanceBase, ratio: int = PPM) -> tuple[int, int]:
    """The price (num, den > 0), in ticks, at which MM = ratio × margin balance, for given brackets.

    `ratio` in ppm: PPM gives the liquidation price (margin ratio 100%), 800_000
    the margin-call price (80%); brackets None (MMR = cum = 0) the bankruptcy
    price. Solving  r·(WB + UPNL1 + Σ(q·P·k − cost)) = TMM1 + Σ(|q|·P·k·MMR − cum)  for P:
        P = [r·(WB + UPNL1 − Σcost) − (TMM1 − Σcum)] / [Σ|q|·k·MMR − r·Σq·k]
    which for r = 1 is Binance's LP formula (mechanics.md §3.1). A denominator
    of 0 means no price solves it (a fully hedged cross symbol).
    """
    num = ratio * (wb + upnl) - PPM * tmm
    den = 0
    for leg, b in zip(legs, brackets, strict=True):
        num -= ratio * leg.cost
        den -= ratio * leg.qty * k
        if b is None:
            continue
        if base is _MARK_NOTIONAL:
            # MM charged at the price's own notional: + cum on top, |q| × MMR × P below
            num += PPM * b.cum
            den += abs(leg.qty) * k * b.mmr
        else:
            # MM charged on the entry notional: a constant, on the TMM side
            num -= PPM * (ceil_div(abs(leg.cost) * b.mmr, PPM) - b.cum)
    if den < 0:
        num, den = -num, -den
    return num, den


def _liquidation_ratio(
    legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int, base: MaintenanceBase, mark: int | None,
    ratio: int = PPM,
) -> tuple[int, int]:
    """(num, den) of the LP with consistent brackets; den == 0 or num <= 0: no liquidation price."""
    legs = [leg for leg in legs if leg.qty]
    if not legs:
        return 0, 0
    if len(legs) == 1:
        leg = legs[0]
        return _one_leg_ratio(leg.qty, leg.cost, leg.table, wb, tmm_other, upnl_other, k, base, mark, ratio)
    if base is _ENTRY_NOTIONAL:
        brackets = [leg.table.for_notional(abs(leg.cost)) for leg in legs]
        return _solve(legs, brackets, wb, tmm_other, upnl_other, k, base, ratio)
    brackets = [leg.table.for_notional(abs(leg.qty) * mark * k if mark else abs(leg.cost)) for leg in legs]
    seen: set[tuple[int, ...]] = set()
    while True:
        num, den = _solve(legs, brackets, wb, tmm_other, upnl_other, k, base, ratio)
        if den == 0 or num <= 0:
            return num, den
        # each leg's bracket at its notional at the LP: |q| × k × num / den, floored
        nxt = [leg.table.for_notional(abs(leg.qty) * k * num // den) for leg in legs]
        key = tuple(b.number for b in nxt)
        if nxt == brackets or key in seen:
            return num, den
        seen.add(key)
        brackets = nxt


def _one_leg_ratio(
    qty: int, cost: int, table: BracketTable, wb: int, tmm_other: int, upnl_other: int, k: int,
    base: MaintenanceBase, mark: int | None, ratio: int = PPM,
) -> tuple[int, int]:
    """`_liquidation_ratio` of one leg (qty ≠ 0), the common case, without Legs and lists: the same (num, den).

    `_solve` for one leg, the bracket-independent part computed once:
        P = [r·(WB + UPNL1 − cost) − (TMM1 − cum)] / [|q|·k·MMR − r·q·k]
    then the same search as `_liquidation_ratio` (from the bracket at `mark`,
    or at entry; stop at a fixed point or at a bracket seen before).
    """
    fixed = ratio * (wb + upnl_other - cost) - PPM * tmm_other
    den_fixed = -ratio * qty * k
    if base is _ENTRY_NOTIONAL:
        notional = abs(cost)
        b = table.for_notional(notional)
        num, den = fixed - PPM * (ceil_div(notional * b.mmr, PPM) - b.cum), den_fixed
        return (-num, -den) if den < 0 else (num, den)
    qk = abs(qty) * k
    b = table.for_notional(qk * mark if mark else abs(cost))
    seen: set[int] | None = None
    while True:
        num = fixed + PPM * b.cum
        den = den_fixed + qk * b.mmr
        if den < 0:
            num, den = -num, -den
        if den == 0 or num <= 0:
            return num, den
        at_lp = qk * num // den  # the LP's notional, floored
        end = table.ends[b.number - 1]
        if b.floor <= at_lp and (end is None or at_lp < end):
            return num, den  # the bracket at the LP is b: `table.for_notional(at_lp) is b`, without the search
        nxt = table.for_notional(at_lp)
        if seen is None:
            seen = set()
        elif nxt.number in seen:
            return num, den
        seen.add(nxt.number)
        b = nxt


def position_liquidation_ticks(
    qty: int, cost: int, table: BracketTable, wb: int, tmm_other: int, upnl_other: int, k: int,
    base: MaintenanceBase, mark: int | None, long: bool, ratio: int = PPM,
) -> int:
    """`liquidation_ticks` of a single leg (qty ≠ 0), given as numbers: the same result, no Leg built."""
    num, den = _one_leg_ratio(qty, cost, table, wb, tmm_other, upnl_other, k, base, mark, ratio)
    if not den or num <= 0:
        return 0
    return -((-num) // den) if long else num // den


def position_prices(qty: int, cost: int, table: BracketTable, wb: int, tmm_other: int, upnl_other: int, k: int,
                    base: MaintenanceBase, mark: int | None) -> tuple[int, int]:
    """(LP, BP) of a single leg (qty ≠ 0) on the tick grid, given as numbers: `liquidation_ticks` and
    `bankruptcy_ticks` of that leg, the same results and rounding (0: none), no Leg built, in one call.

    The BP is `_solve` with no bracket and r = 1, P = PPM·(WB + UPNL1 − TMM1 − cost) / (−PPM·q·k); the common
    factor PPM does not change a floor or a ceiling, so it is left out.
    """
    long = qty > 0
    num, den = _one_leg_ratio(qty, cost, table, wb, tmm_other, upnl_other, k, base, mark)
    liq = 0 if not den or num <= 0 else -((-num) // den) if long else num // den
    num = wb + upnl_other - tmm_other - cost
    den = -qty * k
    if den < 0:
        num, den = -num, -den
    if not den or num <= 0:
        return liq, 0
    return liq, -((-num) // den) if long else num // den


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
    num, den = _liquidation_ratio(legs, wb, tmm_other, upnl_other, k, base, mark)
    return Fraction(num, den) if den and num > 0 else None


def liquidation_ticks(
    legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int, base: MaintenanceBase,
    mark: int | None, long: bool, ratio: int = PPM,
) -> int:
    """The LP (or, with `ratio` < PPM, the margin-call price) on the tick grid; 0: none.

    Rounded toward the mark so that a check comes early, never late: a long
    is at risk when the mark falls to its LP, so its LP rounds up; a short's
    rounds down. The decision itself is always the exact margin ratio.
    """
    num, den = _liquidation_ratio(legs, wb, tmm_other, upnl_other, k, base, mark, ratio)
    if not den or num <= 0:
        return 0
    return -((-num) // den) if long else num // den


def bankruptcy_ratio(legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int) -> tuple[int, int]:
    """(num, den) of the price at which the margin balance is 0: the LP formula with MMR = 0 and cum = 0.

    Note: no cum in the numerator (one Binance-clone engine adds it; mechanics.md §3.1 says do not).
    """
    legs = [leg for leg in legs if leg.qty]
    if not legs:
        return 0, 0
    return _solve(legs, [None] * len(legs), wb, tmm_other, upnl_other, k, _MARK_NOTIONAL)


def bankruptcy_price(legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int) -> Fraction | None:
    num, den = bankruptcy_ratio(legs, wb, tmm_other, upnl_other, k)
    return Fraction(num, den) if den and num > 0 else None


def bankruptcy_ticks(legs: Sequence[Leg], wb: int, tmm_other: int, upnl_other: int, k: int, long: bool) -> int:
    """The BP on the tick grid, rounded against the position (a long's up, a short's down); 0: none.

    A liquidation order at this price can then lose no more than the margin.
    """
    num, den = bankruptcy_ratio(legs, wb, tmm_other, upnl_other, k)
    if not den or num <= 0:
        return 0
    return -((-num) // den) if long else num // den


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
