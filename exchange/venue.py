"""Venue profiles: where venues differ, the choice lives here, in one object passed to the engine.

mechanics.md Part 2 "Where exchanges differ". The default is Binance USDⓈ-M.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class MaintenanceBase(StrEnum):
    """What notional the maintenance margin is charged on."""

    MARK_NOTIONAL = "MARK_NOTIONAL"  # Binance: q × mark (at the liquidation price, q × LP)
    ENTRY_NOTIONAL = "ENTRY_NOTIONAL"  # Bybit classic, MEXC: q × entry price


class AutoAddRule(StrEnum):
    """How much auto margin addition moves into an isolated position per trigger (§7)."""

    ENTRY_MM = "ENTRY_MM"  # MEXC (the emulator default): entry price × qty × MMR
    INITIAL_MARGIN = "INITIAL_MARGIN"  # Bybit, Bitget: the position's initial margin
    MARK_MM_MINUS_CUM = "MARK_MM_MINUS_CUM"  # BTCEX: notional at mark × MMR − cum


class AdlRanking(StrEnum):
    """Which opposite-side positions ADL closes first (mechanics.md Part 1 "ADL", §6; adl/ranking.py)."""

    PNL_LEVERAGE = "PNL_LEVERAGE"  # BitMEX / Binance-style score (default)
    RANDOM_OFFSET = "RANDOM_OFFSET"  # dYdX v4: seeded pseudo-random order (profitable positions still first)


class VenueProfile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    maintenance_base: MaintenanceBase = MaintenanceBase.MARK_NOTIONAL
    auto_add_rule: AutoAddRule = AutoAddRule.ENTRY_MM
    adl_ranking: AdlRanking = AdlRanking.PNL_LEVERAGE
    margin_call_ratio_ppm: int = 800_000  # margin call when MM / margin balance first reaches 80%


BINANCE = VenueProfile(name="binance")
ENTRY_NOTIONAL = VenueProfile(name="entry-notional", maintenance_base=MaintenanceBase.ENTRY_NOTIONAL)

PROFILES: dict[str, VenueProfile] = {p.name: p for p in (BINANCE, ENTRY_NOTIONAL)}


def profile(name: str) -> VenueProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown venue profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
