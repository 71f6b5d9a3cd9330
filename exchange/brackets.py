"""Leverage brackets: notional tiers with max leverage, maintenance margin rate and maintenance amount.

mechanics.md Part 1 "Brackets and maintenance margin" and Part 2 §2:
    MM = notional(mark) × MMR − cum, bracket chosen by notional (floor inclusive)
    cum_n = floor_n × (MMR_n − MMR_{n−1}) + cum_{n−1}
Rates are integers in parts per million (0.65% = 6500); money is atoms.
"""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal

import msgspec

#: Rates (MMR, fee rates, clearance fee) are integers over this denominator.
PPM = 1_000_000


def rate_ppm(value: str | Decimal) -> int:
    """A decimal rate ("0.0065") as an exact integer in ppm; error if it is finer than 1 ppm."""
    d = Decimal(value) * PPM
    if d != d.to_integral_value():
        raise ValueError(f"rate {value} is finer than 1 ppm")
    return int(d)


class Bracket(msgspec.Struct, frozen=True):
    """One tier. `floor`/`cap`/`cum` in atoms, `mmr` in ppm."""

    number: int
    floor: int
    cap: int
    max_leverage: int
    mmr: int
    cum: int


class BracketTable:
    """The tiers of one symbol, ordered by floor, with `cum` derived by the recursion."""

    __slots__ = ("brackets", "ends", "_caps", "_floors")

    def __init__(self, brackets: list[Bracket]) -> None:
        if not brackets or brackets[0].floor != 0:
            raise ValueError("the first bracket must start at notional 0")
        if [b.number for b in brackets] != list(range(1, len(brackets) + 1)):
            raise ValueError("brackets must be numbered 1, 2, … in order")
        self.brackets = brackets
        self._floors = [b.floor for b in brackets]
        #: by bracket number − 1: where `for_notional` stops choosing it (the next floor; None for the last)
        self.ends: list[int | None] = [*self._floors[1:], None]
        self._caps: dict[int, int] = {}  # leverage -> max_notional_for_leverage (the tiers never change)

    @classmethod
    def from_tiers(cls, tiers: list[tuple[str, str, int, str]], atom: Decimal) -> BracketTable:
        """Build from (floor, cap, max leverage, MMR) in USDT and decimals; cum from the recursion."""
        out: list[Bracket] = []
        cum = 0
        prev_mmr = 0
        for i, (floor_s, cap_s, lev, mmr_s) in enumerate(tiers):
            floor = int(Decimal(floor_s) / atom)
            cap = int(Decimal(cap_s) / atom)
            mmr = rate_ppm(mmr_s)
            if i:
                # cum_n = floor_n × (MMR_n − MMR_{n−1}) + cum_{n−1}; exact because floors are whole USDT
                step = floor * (mmr - prev_mmr)
                if step % PPM:
                    raise ValueError("bracket floor × ΔMMR is not a whole number of atoms")
                cum += step // PPM
            out.append(Bracket(i + 1, floor, cap, lev, mmr, cum))
            prev_mmr = mmr
        return cls(out)

    def for_notional(self, notional: int) -> Bracket:
        """The bracket whose [floor, cap) holds `notional` (floor inclusive; beyond the last cap: the last)."""
        i = bisect_right(self._floors, notional)
        return self.brackets[i - 1 if i else 0]

    @property
    def max_leverage(self) -> int:
        return self.brackets[0].max_leverage

    def max_notional_for_leverage(self, leverage: int) -> int:
        """The largest position notional that `leverage` is allowed at (Binance -2027 beyond it); cached."""
        cap = self._caps.get(leverage)
        if cap is None:
            cap = 0
            for b in self.brackets:
                if b.max_leverage >= leverage:
                    cap = b.cap
            self._caps[leverage] = cap
        return cap


def maintenance_margin(notional: int, bracket: Bracket) -> int:
    """MM = notional × MMR − cum, in atoms; the MMR product rounds up (owed to the exchange)."""
    return -((-notional * bracket.mmr) // PPM) - bracket.cum


_USDT = Decimal("0.00000001")

#: BTCUSDT, Binance /fapi/v1/leverageBracket snapshot as shipped in freqtrade 2026.9 (mechanics.md §2).
BTCUSDT_TIERS = [
    ("0", "300000", 150, "0.004"), ("300000", "800000", 100, "0.005"), ("800000", "3000000", 75, "0.0065"),
    ("3000000", "12000000", 50, "0.01"), ("12000000", "70000000", 25, "0.02"), ("70000000", "100000000", 20, "0.025"),
    ("100000000", "230000000", 10, "0.05"), ("230000000", "480000000", 5, "0.1"),
    ("480000000", "600000000", 4, "0.125"), ("600000000", "800000000", 3, "0.15"),
    ("800000000", "1200000000", 2, "0.25"), ("1200000000", "1800000000", 1, "0.5"),
]

#: ETHUSDT, same snapshot (mechanics.md Part 1).
ETHUSDT_TIERS = [
    ("0", "300000", 150, "0.004"), ("300000", "800000", 100, "0.005"), ("800000", "3000000", 75, "0.0065"),
    ("3000000", "12000000", 50, "0.01"), ("12000000", "50000000", 25, "0.02"), ("50000000", "65000000", 20, "0.025"),
    ("65000000", "150000000", 10, "0.05"), ("150000000", "320000000", 5, "0.1"),
    ("320000000", "400000000", 4, "0.125"), ("400000000", "530000000", 3, "0.15"),
    ("530000000", "800000000", 2, "0.25"), ("800000000", "1200000000", 1, "0.5"),
]

#: The 2021-era BTCUSDT table used by Binance's own worked example and freqtrade's conftest (mechanics.md §2).
BTCUSDT_TIERS_2021 = [
    ("0", "50000", 125, "0.004"), ("50000", "250000", 100, "0.005"), ("250000", "1000000", 50, "0.01"),
    ("1000000", "7500000", 20, "0.025"), ("7500000", "40000000", 10, "0.05"), ("40000000", "100000000", 5, "0.1"),
    ("100000000", "200000000", 4, "0.125"), ("200000000", "400000000", 3, "0.15"),
    ("400000000", "600000000", 2, "0.25"), ("600000000", "1000000000", 1, "0.5"),
]

DEFAULT_TIERS: dict[str, list[tuple[str, str, int, str]]] = {"BTCUSDT": BTCUSDT_TIERS, "ETHUSDT": ETHUSDT_TIERS}


def default_table(symbol: str, atom: Decimal = _USDT) -> BracketTable:
    """The default bracket table of `symbol` (BTCUSDT's for a symbol without one of its own)."""
    return BracketTable.from_tiers(DEFAULT_TIERS.get(symbol, BTCUSDT_TIERS), atom)


def fixed_table(mmr: str | Decimal, cum: str | Decimal, max_leverage: int = 125, atom: Decimal = _USDT) -> BracketTable:
    """A single bracket overriding a symbol's table (the calculator's `mmr`/`cum` inputs)."""
    return BracketTable([Bracket(1, 0, 1 << 62, max_leverage, rate_ppm(str(mmr)), int(Decimal(str(cum)) / atom))])
