"""ADL ranking: which opposite-side positions are deleveraged first.

mechanics.md Part 1 "ADL" and Part 2 §6. Default (BitMEX's formula, which the
spec takes for Binance's undisclosed one):
    score = PnL% × effective leverage   if PnL% > 0
          = PnL% / effective leverage   otherwise
    PnL% = unrealised PnL / |entry value|
    effective leverage = |mark value| / (mark value − bankruptcy value)
Longs and shorts are ranked separately, highest score first; ties by account
id, then symbol (never by dict order). Scores are exact fractions.

Alternative (dYdX v4): no score; iteration from a pseudo-random start offset
over the candidates in account order, seeded per liquidation, so a run stays
deterministic. The emulator's rule that a losing position is touched only
after every profitable one (mechanics.md Part 1 "ADL") holds here too: the
profitable candidates come first, each group in its own seeded rotation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction

from exchange.accounts import Position
from exchange.venue import AdlRanking  # the choice is the venue profile's

__all__ = ["AdlRanking", "profitable", "quantiles", "random_offsets", "rank", "score"]


def score(pos: Position, mark: int, k: int) -> Fraction:
    """The BitMEX ADL score of one position at `mark` (ticks), exact."""
    mark_value = pos.qty * mark * k  # signed
    pnl = mark_value - pos.cost
    pnl_pct = Fraction(pnl, abs(pos.cost))
    bankrupt_value = pos.qty * pos.bankruptcy_ticks * k
    equity = mark_value - bankrupt_value  # > 0 while the position is solvent
    # insolvent (equity ≤ 0): treated as infinitely levered
    eff_lev = Fraction(abs(mark_value), equity) if equity > 0 else Fraction(10**12)
    return pnl_pct * eff_lev if pnl_pct > 0 else pnl_pct / eff_lev


def profitable(pos: Position, mark: int, k: int) -> bool:
    """Its unrealised PnL at `mark` is positive (signed: q × mark × k − cost)."""
    return pos.qty * mark * k - pos.cost > 0


def random_offsets(groups: Sequence[Sequence[Position]], seed: int) -> list[tuple[Sequence[Position], int]]:
    """RANDOM_OFFSET: each group (profitable, then the rest) with its start offset, drawn in turn from one
    generator seeded with `seed` (an empty group draws nothing)."""
    rng = random.Random(seed)
    return [(g, rng.randrange(len(g)) if g else 0) for g in groups]


def rank(candidates: Sequence[Position], mark: int, k: int, method: AdlRanking = AdlRanking.PNL_LEVERAGE,
         seed: int = 0) -> list[Position]:
    """Candidates in deleveraging order (first = first to be closed)."""
    by_account = sorted(candidates, key=lambda p: (p.account, p.symbol, p.position_side.value))
    if method is AdlRanking.RANDOM_OFFSET:
        winners = [p for p in by_account if profitable(p, mark, k)]
        losers = [p for p in by_account if not profitable(p, mark, k)]
        return [p for g, start in random_offsets((winners, losers), seed) for p in (*g[start:], *g[:start])]
    scored = [(score(p, mark, k), p) for p in by_account]
    scored.sort(key=lambda sp: -sp[0])  # stable: ties keep account, then symbol order
    return [p for _, p in scored]


def quantiles(ranked: Sequence[Position]) -> list[tuple[Position, int]]:
    """Binance adlQuantile 0..4 for each ranked position: q = min(4, floor(percentile × 5)).

    The percentile is the position's place in its side's ranking: 1 for the
    first to be deleveraged, 1/n for the last. Lights (1..5) = quantile + 1.
    """
    n = len(ranked)
    return [(p, min(4, (n - i) * 5 // n)) for i, p in enumerate(ranked)]
