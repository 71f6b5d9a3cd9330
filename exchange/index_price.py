"""Index price: the weighted average of spot sources, with Binance's outlier protection.

mechanics.md Part 1 "Index price" and Part 2 §1.1 [BIN-MARK]:
    PriceIndex = Σ_i w_i × spot_i,   w_i = weight_i / Σ weights
    - a source more than 5% off the median of all sources gets weight 0;
    - if more than one source is off, the median of all sources is used instead;
    - a source that cannot be reached (price None) is dropped;
    - the weights of what is left are renormalised.

Exact integer arithmetic. Definitions this module fixes:
    - "All sources" for the median means all *present* sources (a missing one
      has no price to take a median of), whatever their weight.
    - The median of an even count is the mean of the two middle prices (an
      exact fraction, possibly half a tick). It is used unrounded for the 5%
      test and rounded only when it is itself the answer.
    - "More than 5% off" is strict: |p − median| > 5% × median, compared as
      integers (20 × |p − median| > median at the default), so a source
      exactly 5% away keeps its weight.
    - If every source left has weight 0 (all configured so), the median is used.
    - Rounding: the result is rounded once, to the nearest tick, ties to the
      even tick (half-even: symmetric, no drift up or down).

Intended integration: the market-data clock tick (every second of virtual
time, before the mark-price basis sample) reads each symbol's sources, e.g.
`exchange.price_paths.IndexFeed.sources_at(now)`, and calls `index_price`;
a None (no source present) keeps the previous index. The result feeds
`MarkPriceModel.sample_basis` / `mark_at` and the premium-index sample of
`exchange.funding.FundingRateModel`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from fractions import Fraction
from typing import NamedTuple

from exchange.brackets import PPM

#: Binance: a source more than 5% off the median gets weight 0 (ppm of the median).
DEFAULT_MAX_DEVIATION_PPM = 50_000


class IndexSource(NamedTuple):
    """One constituent: a venue, its relative weight (integer ≥ 0) and its price in ticks (None: unreachable)."""

    venue: str
    weight: int
    price_ticks: int | None


class IndexMethod(StrEnum):
    WEIGHTED = "WEIGHTED"  # weighted average of the sources within 5% of the median
    MEDIAN = "MEDIAN"  # more than one outlier (or no weight left): the median of all present sources


class IndexComputation(NamedTuple):
    """How an index was obtained: the tick price, the exact value, the method and the venues given weight 0."""

    price_ticks: int
    exact: Fraction
    method: IndexMethod
    excluded: tuple[str, ...]  # present venues more than the deviation off the median
    dropped: tuple[str, ...]  # venues with no price


def median(values: Iterable[int]) -> Fraction:
    """The median; for an even count the mean of the two middle values (exact)."""
    s = sorted(values)
    if not s:
        raise ValueError("median of no values")
    n = len(s)
    mid = n // 2
    if n % 2:
        return Fraction(s[mid])
    return Fraction(s[mid - 1] + s[mid], 2)


def _is_off(price: int, med: Fraction, max_deviation_ppm: int) -> bool:
    """|price − median| > deviation × median, exactly: |p − m| × PPM > dev_ppm × m."""
    return abs(price - med) * PPM > max_deviation_ppm * med


def index_price_detail(
    sources: Iterable[IndexSource], max_deviation_ppm: int = DEFAULT_MAX_DEVIATION_PPM,
) -> IndexComputation | None:
    """The index with how it was obtained; None when no source has a price."""
    present: list[IndexSource] = []
    dropped: list[str] = []
    for s in sources:
        if s.weight < 0:
            raise ValueError(f"index source {s.venue}: negative weight {s.weight}")
        if s.price_ticks is None:
            dropped.append(s.venue)
        elif s.price_ticks <= 0:
            raise ValueError(f"index source {s.venue}: price must be positive, got {s.price_ticks}")
        else:
            present.append(s)
    if not present:
        return None
    med = median(s.price_ticks for s in present)  # type: ignore[misc]
    kept: list[IndexSource] = []
    excluded: list[str] = []
    for s in present:
        if _is_off(s.price_ticks, med, max_deviation_ppm):  # type: ignore[arg-type]
            excluded.append(s.venue)
        else:
            kept.append(s)
    total_weight = sum(s.weight for s in kept)
    if len(excluded) > 1 or total_weight == 0:
        exact = med
        method = IndexMethod.MEDIAN
    else:
        # Σ w_i × p_i / Σ w_i over the sources left (renormalised weights), exact
        exact = Fraction(sum(s.weight * s.price_ticks for s in kept), total_weight)  # type: ignore[misc]
        method = IndexMethod.WEIGHTED
    # Fraction.__round__ without ndigits: nearest integer, ties to even, in exact integer arithmetic
    return IndexComputation(round(exact), exact, method, tuple(excluded), tuple(dropped))


def index_price(sources: Iterable[IndexSource], max_deviation_ppm: int = DEFAULT_MAX_DEVIATION_PPM) -> int | None:
    """The index price in ticks (nearest tick, half-even), or None when no source has a price."""
    r = index_price_detail(sources, max_deviation_ppm)
    return None if r is None else r.price_ticks
