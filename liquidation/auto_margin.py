"""Auto margin addition (isolated only, opt-in per position): how much one trigger adds.

mechanics.md Part 1 "Auto margin addition" and Part 2 §7. On the trigger the
caller has already cancelled the symbol's open orders; then
    add = min(rule amount, available balance)
Default rule (MEXC, the best specified): entry price × qty × MMR. Options:
the position's initial margin (Bybit, Bitget), or notional at mark × MMR −
cum (BTCEX). Amounts round up (they are owed to the position) and are then
capped by what is available.
"""

from __future__ import annotations

from exchange.accounts import Position
from exchange.brackets import PPM, BracketTable
from exchange.margin import ceil_div
from exchange.venue import AutoAddRule


def auto_add_amount(rule: AutoAddRule, pos: Position, table: BracketTable, mark: int, k: int, available: int) -> int:
    """Atoms to move from the available balance into the isolated margin on one trigger (≥ 0)."""
    entry_notional = abs(pos.cost)
    if rule is AutoAddRule.ENTRY_MM:
        # EP × qty × MMR, bracket at the entry notional
        want = ceil_div(entry_notional * table.for_notional(entry_notional).mmr, PPM)
    elif rule is AutoAddRule.INITIAL_MARGIN:
        want = ceil_div(entry_notional, pos.settings.leverage)
    else:
        notional = abs(pos.qty) * mark * k
        bracket = table.for_notional(notional)
        want = max(0, ceil_div(notional * bracket.mmr, PPM) - bracket.cum)
    return max(0, min(want, available))
