"""Conversion between decimal strings (the edges) and integer units (the core).

The core never sees a float or a Decimal: prices are integer ticks, quantities
integer lots, money integer atoms of the settlement asset. Only a gateway, a
scenario loader or the calculator crosses this boundary, and a value that is
off the grid is an error naming the rule it broke, never a silent rounding.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    Decimal,
    InvalidOperation,
)

from exchange.enums import RejectReason


class GridError(ValueError):
    """A decimal value that is not a whole number of the unit it is given in."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_decimal(value: str | int | Decimal, what: str) -> Decimal:
    """A finite Decimal from a decimal string, an int or a Decimal (never a float)."""
    if isinstance(value, float):
        raise GridError(RejectReason.MALFORMED, f"{what}: give a decimal string, not a float ({value!r})")
    try:
        d = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, TypeError, ValueError):
        raise GridError(RejectReason.MALFORMED, f"{what}: not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise GridError(RejectReason.MALFORMED, f"{what}: not a finite number: {value!r}")
    return d


def to_units(value: str | int | Decimal, unit: Decimal, what: str, off_grid: RejectReason) -> int:
    """The whole number of `unit`s in `value`; GridError(off_grid) if it is not whole."""
    d = parse_decimal(value, what)
    try:
        n, rest = divmod(d, unit)  # exact, unlike d / unit (rounded to 28 digits), or an error
    except ArithmeticError:  # the quotient has more digits than the context holds
        raise GridError(RejectReason.MALFORMED, f"{what}: out of range: {value!r}") from None
    if rest:
        raise GridError(off_grid, f"{what}: {value} is not a multiple of {unit}")
    return int(n)


def from_units(n: int, unit: Decimal) -> str:
    """The decimal string of `n` units, with as many decimals as the unit has."""
    exp = unit.as_tuple().exponent
    assert isinstance(exp, int)
    return format((Decimal(n) * unit).quantize(Decimal(1).scaleb(min(exp, 0))), "f")


def floor_units(value: Decimal, unit: Decimal) -> int:
    """`value` in `unit`s, rounded down (amounts paid out)."""
    return int((value / unit).to_integral_value(rounding=ROUND_FLOOR))


def ceil_units(value: Decimal, unit: Decimal) -> int:
    """`value` in `unit`s, rounded up (amounts owed to the exchange)."""
    return int((value / unit).to_integral_value(rounding=ROUND_CEILING))
